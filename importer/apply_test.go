package importer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

func TestHandler(t *testing.T) {
	now := time.Now()
	src := readSource(t, newCrowdSecDB(t, now), now)
	body, _ := json.Marshal(src)
	f := fsm.New(nil)
	var index uint64
	var applied int
	apply := func(_ context.Context, c fsm.Command) (*fsm.Result, error) {
		applied++
		applyAll(t, f, []fsm.Command{c}, &index)
		return &fsm.Result{N: 1}, nil
	}
	h := Handler(f, apply, func(context.Context) error { return nil })
	post := func(query, body string) (*httptest.ResponseRecorder, Report) {
		rec := httptest.NewRecorder()
		h(rec, httptest.NewRequest("POST", Route+query, strings.NewReader(body)))
		var rep Report
		_ = json.Unmarshal(rec.Body.Bytes(), &rep)
		return rec, rep
	}

	rec, _ := post("", "{not json")
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"message"`) {
		t.Errorf("bad body: %d %s", rec.Code, rec.Body)
	}
	rec, rep := post("?dry_run=true", string(body))
	if rec.Code != http.StatusOK || rep.Applied || rep.Changes() == 0 || applied != 0 {
		t.Errorf("dry run: %d applied=%v changes=%d writes=%d", rec.Code, rep.Applied, rep.Changes(), applied)
	}
	rec, rep = post("", string(body))
	if rec.Code != http.StatusOK || !rep.Applied || applied == 0 || len(f.Machines()) != 3 {
		t.Errorf("import: %d %+v, %d writes", rec.Code, rep, applied)
	}
	writes := applied
	rec, rep = post("", string(body))
	if rec.Code != http.StatusOK || rep.Changes() != 0 || applied != writes {
		t.Errorf("second import: %d changes=%d writes=%d", rec.Code, rep.Changes(), applied-writes)
	}

	// a refused write stops the import with the reason; no leader: 503
	refuse := Handler(fsm.New(nil), func(context.Context, fsm.Command) (*fsm.Result, error) {
		return nil, errors.New("no leader")
	}, nil)
	rec = httptest.NewRecorder()
	refuse(rec, httptest.NewRequest("POST", Route, strings.NewReader(string(body))))
	if rec.Code != http.StatusConflict || !strings.Contains(rec.Body.String(), "import stopped (machine agent1): no leader") {
		t.Errorf("refused: %d %s", rec.Code, rec.Body)
	}
	noLeader := Handler(fsm.New(nil), apply, func(context.Context) error { return errors.New("no leader") })
	rec = httptest.NewRecorder()
	noLeader(rec, httptest.NewRequest("POST", Route, strings.NewReader(string(body))))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("no leader: %d %s", rec.Code, rec.Body)
	}
}

func TestPartsPlanLikeTheWhole(t *testing.T) {
	now := time.Now()
	src := readSource(t, newCrowdSecDB(t, now), now)
	parts := src.Parts(1)
	if len(parts) != 3 || len(parts[0].Alerts) != 0 || len(parts[0].Machines) != 3 || len(parts[1].Alerts) != 1 || len(parts[2].Alerts) != 1 ||
		len(parts[1].Skipped) != 0 {
		t.Fatalf("parts: %d", len(parts))
	}
	whole := fsm.New(nil)
	var wi uint64
	cmds, want := Plan(whole, src, now)
	applyAll(t, whole, cmds, &wi)

	f := fsm.New(nil)
	var index uint64
	var total Report
	for i, p := range parts {
		cmds, rep := Plan(f, p, now)
		applyAll(t, f, cmds, &index)
		rep.Applied = true
		if i == 0 {
			total = rep
		} else {
			total.Merge(rep)
		}
	}
	if counts(total) != counts(want) || len(total.Skipped) != len(want.Skipped) || !total.Applied {
		t.Errorf("parts:\n got %s\nwant %s", counts(total), counts(want))
	}
	if len(f.Decisions(&fsm.DecisionFilter{IncludeSimulated: true, NoDedup: true}, now)) != 3 {
		t.Error("decisions of the parts")
	}
}

func TestPlanSkipsInvalidRecords(t *testing.T) {
	now := time.Now()
	long := strings.Repeat("x", fsm.MaxName+1)
	src := &Source{
		Machines:   []fsm.Machine{{ID: long, AuthType: fsm.AuthPassword, PasswordHash: []byte("$2a$")}, {ID: "ok", AuthType: fsm.AuthPassword}},
		Bouncers:   []fsm.Bouncer{{Name: long, AuthType: fsm.AuthAPIKey}},
		Allowlists: []fsm.Allowlist{{Name: long, Items: []fsm.AllowlistItem{{Value: "10.0.0.1"}}}},
		Alerts: []SourceAlert{{Alert: fsm.Alert{Scenario: strings.Repeat("x", fsm.MaxText+1)}, Decisions: []fsm.Decision{{Type: "ban", Scope: "Ip", Value: "192.0.2.1",
			Origin: "cscli", Scenario: "s", Until: now.Add(time.Hour).UnixNano()}}}},
	}
	f := fsm.New(nil)
	cmds, rep := Plan(f, src, now)
	var index uint64
	applyAll(t, f, cmds, &index)
	want := "machines=1/0/1 bouncers=0/0/1 alerts=0/0/1 decisions=0/0/1 allowlists=0/0/1 allowlist items=0/0/1 capi credentials=0/0/0 console options=0/0/0 profiles=0/0/0"
	if counts(rep) != want || len(cmds) != 1 {
		t.Errorf("got %s (%d commands)\nwant %s", counts(rep), len(cmds), want)
	}
}
