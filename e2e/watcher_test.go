package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// liveGet asks the LAPI for the active decisions covering value, as a
// live-mode bouncer does.
func liveGet(t testing.TB, b *csbouncer.LiveBouncer, value string) []*models.Decision {
	t.Helper()

	r := mustCall(t, "LiveBouncer.Get("+value+")", func(ctx context.Context) (*models.GetDecisionsResponse, error) {
		return b.Get(ctx, value)
	})
	if r == nil {
		return nil
	}

	return *r
}

func deleteDecisions(t testing.TB, c *apiclient.ApiClient, opts apiclient.DecisionsDeleteOpts) string {
	t.Helper()

	r := mustCall(t, "Decisions.Delete", func(ctx context.Context) (*models.DeleteDecisionResponse, error) {
		r, _, err := c.Decisions.Delete(ctx, opts)
		return r, err
	})
	if r == nil {
		t.Fatalf("Decisions.Delete: nil response")
	}

	return r.NbDeleted
}

func deleteDecisionByID(t testing.TB, c *apiclient.ApiClient, id int64) string {
	t.Helper()

	r := mustCall(t, fmt.Sprintf("Decisions.DeleteOne(%d)", id), func(ctx context.Context) (*models.DeleteDecisionResponse, error) {
		r, _, err := c.Decisions.DeleteOne(ctx, strconv.FormatInt(id, 10))
		return r, err
	})
	if r == nil {
		t.Fatalf("Decisions.DeleteOne: nil response")
	}

	return r.NbDeleted
}

// TestWatcherFlow drives the machine side of the API with the crowdsec
// client library: registration, validation, login, agent and cscli alerts,
// alert search, decision and alert deletion, with a live bouncer checking
// what bouncers see at each step.
func TestWatcherFlow(t *testing.T) {
	s := StartServer(t)

	const (
		machine  = "agent-1"
		password = "e2e-Agent-1-password-0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"
	)

	// cscli lapi register: POST /v1/watchers → pending machine.
	if err := registerWatcher(t, s, machine, password); err != nil {
		t.Fatalf("RegisterClient: %v", err)
	}
	s.waitListed("machines", machine, "is pending", fieldIs("is_validated", false))
	s.waitListed("machines", machine, "has the client IP", fieldIs("ip_address", "127.0.0.1"))
	s.waitListed("machines", machine, "uses password auth", fieldIs("auth_type", "password"))
	// A second registration of the same id is refused.
	if err := registerWatcher(t, s, machine, password); err == nil || !errContains(err, "403") {
		t.Fatalf("second RegisterClient of %q: err = %v, want a 403 error", machine, err)
	}

	w := newWatcher(t, s, machine, password)
	login := func() (models.WatcherAuthResponse, int, error) {
		type res struct {
			r    models.WatcherAuthResponse
			code int
		}
		r, err := call("Auth.AuthenticateWatcher", func(ctx context.Context) (res, error) {
			pw := strfmt.Password(password)
			m := machine
			r, resp, err := w.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{
				MachineID: &m, Password: &pw, Scenarios: testScenarios,
			})
			return res{r, statusOf(resp)}, err
		})
		return r.r, r.code, err
	}

	// Pending machines cannot log in.
	if _, code, err := login(); err == nil || code != 401 {
		t.Fatalf("login of a pending machine: status %d, err %v; want 401 and an error", code, err)
	}

	s.MustCLI("machines", "validate", machine)
	s.waitListed("machines", machine, "is validated", fieldIs("is_validated", true))

	auth, code, err := login()
	if err != nil || code != 200 {
		t.Fatalf("login after validation: status %d, err %v", code, err)
	}
	if auth.Token == "" {
		t.Fatalf("login: empty token")
	}
	var exp time.Time
	if err := exp.UnmarshalText([]byte(auth.Expire)); err != nil {
		t.Fatalf("login: expire %q is not RFC 3339: %v", auth.Expire, err)
	}
	if until := time.Until(exp); until < 50*time.Minute || until > 70*time.Minute {
		t.Fatalf("login: token expires in %s, want about 1h", until)
	}

	ok := mustCall(t, "HeartBeat.Ping", func(ctx context.Context) (bool, error) {
		ok, _, err := w.HeartBeat.Ping(ctx)
		return ok, err
	})
	if !ok {
		t.Fatalf("heartbeat not ok")
	}
	// Login records the scenarios and the version from the User-Agent;
	// the heartbeat its time.
	s.waitListed("machines", machine, "has the login's scenarios", fieldIs("scenarios", "crowdsecurity/ssh-bf,crowdsecurity/http-probing"))
	s.waitListed("machines", machine, "has the agent version", fieldIs("version", "v1.7.6-test-linux"))
	s.waitListed("machines", machine, "has a last heartbeat", fieldSet("last_heartbeat"))

	// Agent alerts: no decisions; the default profile bans the source IP 4h.
	const scenario = "crowdsecurity/ssh-bf"
	sent := []*models.Alert{agentAlert("192.0.2.10", scenario, 6), agentAlert("192.0.2.11", scenario, 6)}
	agentIDs := pushAlerts(t, w, sent...)
	if agentIDs[0] == agentIDs[1] {
		t.Fatalf("two alerts got the same id %d", agentIDs[0])
	}

	agentDecisions := make([]*models.Decision, len(agentIDs))
	for i, id := range agentIDs {
		ip := *sent[i].Source.Value
		a := getAlert(t, w, id)
		what := fmt.Sprintf("agent alert %d (%s)", id, ip)

		if a.MachineID != machine {
			t.Errorf("%s: machine_id %q, want %q", what, a.MachineID, machine)
		}
		if str(a.Scenario) != scenario || str(a.ScenarioVersion) != "0.3" || str(a.ScenarioHash) != *sent[i].ScenarioHash {
			t.Errorf("%s: scenario/version/hash = %s/%s/%s", what, str(a.Scenario), str(a.ScenarioVersion), str(a.ScenarioHash))
		}
		if str(a.Message) != *sent[i].Message {
			t.Errorf("%s: message %q, want %q", what, str(a.Message), *sent[i].Message)
		}
		if a.EventsCount == nil || *a.EventsCount != 6 || a.Capacity == nil || *a.Capacity != 5 || str(a.Leakspeed) != "10s" {
			t.Errorf("%s: events_count/capacity/leakspeed wrong: %v/%v/%s", what, a.EventsCount, a.Capacity, str(a.Leakspeed))
		}
		if !a.Remediation || a.Simulated == nil || *a.Simulated {
			t.Errorf("%s: remediation %v simulated %v, want true/false", what, a.Remediation, a.Simulated)
		}
		if a.Source == nil || str(a.Source.Scope) != "Ip" || str(a.Source.Value) != ip || a.Source.IP != ip ||
			a.Source.Range != "192.0.2.0/24" || a.Source.AsNumber != "64496" || a.Source.AsName != "EXAMPLE-AS" ||
			a.Source.Cn != "FR" || a.Source.Latitude != sent[i].Source.Latitude {
			t.Errorf("%s: source not kept: %+v", what, a.Source)
		}
		if len(a.Events) != 6 {
			t.Errorf("%s: %d events, want 6", what, len(a.Events))
		} else if len(a.Events[0].Meta) != 4 {
			t.Errorf("%s: first event has %d meta items, want 4", what, len(a.Events[0].Meta))
		}
		if len(a.Meta) != 1 || a.Meta[0].Key != "target_user" || a.Meta[0].Value != `["root"]` {
			t.Errorf("%s: alert meta not kept: %+v", what, a.Meta)
		}
		approxTime(t, what+" start_at", str(a.StartAt), *sent[i].StartAt)
		approxTime(t, what+" stop_at", str(a.StopAt), *sent[i].StopAt)
		if _, err := time.Parse(time.RFC3339, a.CreatedAt); err != nil {
			t.Errorf("%s: created_at %q is not RFC 3339", what, a.CreatedAt)
		}

		if len(a.Decisions) != 1 {
			t.Fatalf("%s: %d decisions %s, want the default profile's one 4h ban", what, len(a.Decisions), fmtDecisions(a.Decisions))
		}
		d := a.Decisions[0]
		checkDecision(t, what, d, "crowdsec", "ban", "Ip", ip)
		checkDuration(t, what, d.Duration, 4*time.Hour, 2*time.Minute)
		if str(d.Scenario) != scenario {
			t.Errorf("%s: decision scenario %q, want %q", what, str(d.Scenario), scenario)
		}
		if d.Simulated == nil || *d.Simulated {
			t.Errorf("%s: decision simulated = %v, want false", what, d.Simulated)
		}
		agentDecisions[i] = d
	}

	// cscli decisions add --ip 1.2.3.4 -d 1h / --range 10.0.0.0/24 -d 1h.
	ipAlert := addDecision(t, w, "Ip", "1.2.3.4", "1h")
	rangeAlert := addDecision(t, w, "Range", "10.0.0.0/24", "1h")
	for _, c := range []struct {
		id           int
		scope, value string
	}{{ipAlert, "Ip", "1.2.3.4"}, {rangeAlert, "Range", "10.0.0.0/24"}} {
		a := getAlert(t, w, c.id)
		what := fmt.Sprintf("cscli alert %d (%s)", c.id, c.value)
		if len(a.Decisions) != 1 {
			t.Fatalf("%s: decisions %s, want exactly the one sent", what, fmtDecisions(a.Decisions))
		}
		checkDecision(t, what, a.Decisions[0], "cscli", "ban", c.scope, c.value)
		checkDuration(t, what, a.Decisions[0].Duration, time.Hour, 2*time.Minute)
		if want := "manual 'ban' from 'e2e'"; str(a.Decisions[0].Scenario) != want || str(a.Scenario) != want {
			t.Errorf("%s: scenario %q / decision scenario %q, want %q", what, str(a.Scenario), str(a.Decisions[0].Scenario), want)
		}
	}

	allIDs := append(slices.Clone(agentIDs), ipAlert, rangeAlert)
	s.waitListed("machines", machine, "has a last push", fieldSet("last_push"))

	// Alert search.
	all := listAlerts(t, w, nil)
	if got := alertIDs(all); !sameIDs(got, allIDs) {
		t.Fatalf("alerts list: ids %v, want %v", got, allIDs)
	} else if !slices.IsSortedFunc(got, func(a, b int) int { return b - a }) {
		t.Errorf("alerts list: ids %v not in the default descending order", got)
	}
	for _, c := range []struct {
		name string
		opt  func(*apiclient.AlertsListOpts)
		want []int
	}{
		{"ip=1.2.3.4", func(o *apiclient.AlertsListOpts) { o.IPEquals = "1.2.3.4" }, []int{ipAlert}},
		{"ip=10.0.0.7 (inside the range)", func(o *apiclient.AlertsListOpts) { o.IPEquals = "10.0.0.7" }, []int{rangeAlert}},
		{"range=10.0.0.0/24", func(o *apiclient.AlertsListOpts) { o.RangeEquals = "10.0.0.0/24" }, []int{rangeAlert}},
		{"scenario=" + scenario, func(o *apiclient.AlertsListOpts) { o.ScenarioEquals = scenario }, agentIDs},
		{"has_active_decision=true", func(o *apiclient.AlertsListOpts) { o.ActiveDecisionEquals = ptr(true) }, allIDs},
		{"scope=ip value=192.0.2.11", func(o *apiclient.AlertsListOpts) { o.ScopeEquals = "ip"; o.ValueEquals = "192.0.2.11" }, agentIDs[1:]},
		{"limit=1", func(o *apiclient.AlertsListOpts) { o.Limit = ptr(1) }, []int{rangeAlert}},
	} {
		if got := alertIDs(listAlerts(t, w, c.opt)); !sameIDs(got, c.want) {
			t.Errorf("alerts list %s: ids %v, want %v", c.name, got, c.want)
		}
	}

	// What a bouncer sees.
	const bouncerKey = "e2e-watcher-flow-bouncer-key-0123456789"
	addBouncer(t, s, "fw-1", bouncerKey)
	lb := newLiveBouncer(t, s, bouncerKey)

	expectLive := func(value string, want ...string) {
		t.Helper()
		got := liveGet(t, lb, value)
		var gotValues []string
		for _, d := range got {
			gotValues = append(gotValues, str(d.Value))
		}
		slices.Sort(gotValues)
		slices.Sort(want)
		if !slices.Equal(gotValues, want) {
			t.Fatalf("live decisions for %s: %s, want values %v", value, fmtDecisions(got), want)
		}
	}

	expectLive("192.0.2.10", "192.0.2.10")
	expectLive("192.0.2.11", "192.0.2.11")
	expectLive("1.2.3.4", "1.2.3.4")
	expectLive("10.0.0.7", "10.0.0.0/24")
	expectLive("10.0.1.7")

	// cscli decisions delete --ip 1.2.3.4
	if n := deleteDecisions(t, w, apiclient.DecisionsDeleteOpts{IPEquals: "1.2.3.4"}); n != "1" {
		t.Fatalf("delete decisions ip=1.2.3.4: nbDeleted %q, want \"1\"", n)
	}
	expectLive("1.2.3.4")
	// Nothing left to delete for that IP.
	if n := deleteDecisions(t, w, apiclient.DecisionsDeleteOpts{IPEquals: "1.2.3.4"}); n != "0" {
		t.Fatalf("second delete decisions ip=1.2.3.4: nbDeleted %q, want \"0\"", n)
	}

	// cscli decisions delete --id N
	if n := deleteDecisionByID(t, w, agentDecisions[0].ID); n != "1" {
		t.Fatalf("delete decision %d: nbDeleted %q, want \"1\"", agentDecisions[0].ID, n)
	}
	expectLive("192.0.2.10")
	expectLive("192.0.2.11", "192.0.2.11")

	// The expired decision stays attached to its alert, with no time left.
	a := getAlert(t, w, agentIDs[0])
	if len(a.Decisions) != 1 || a.Decisions[0].ID != agentDecisions[0].ID {
		t.Fatalf("alert %d after decision delete: decisions %s, want the expired one", agentIDs[0], fmtDecisions(a.Decisions))
	}
	if d := parseDuration(t, str(a.Decisions[0].Duration)); d > 0 {
		t.Fatalf("alert %d: deleted decision still has duration %s", agentIDs[0], str(a.Decisions[0].Duration))
	}

	// Deleting an unknown decision id is an error.
	if _, err := call("Decisions.DeleteOne(unknown)", func(ctx context.Context) (*models.DeleteDecisionResponse, error) {
		r, _, err := w.Decisions.DeleteOne(ctx, "987654321")
		return r, err
	}); err == nil {
		t.Fatalf("delete of unknown decision id: no error")
	}

	active := listAlerts(t, w, func(o *apiclient.AlertsListOpts) { o.ActiveDecisionEquals = ptr(true) })
	if got, want := alertIDs(active), []int{agentIDs[1], rangeAlert}; !sameIDs(got, want) {
		t.Fatalf("alerts with active decisions after deletes: %v, want %v", got, want)
	}

	// cscli alerts delete --id N: the alert and its decisions go.
	delOne := mustCall(t, "Alerts.DeleteOne", func(ctx context.Context) (*models.DeleteAlertsResponse, error) {
		r, _, err := w.Alerts.DeleteOne(ctx, strconv.Itoa(agentIDs[1]))
		return r, err
	})
	if delOne == nil || delOne.NbDeleted != "1" {
		t.Fatalf("delete alert %d: %+v, want nbDeleted \"1\"", agentIDs[1], delOne)
	}
	if _, err := call("Alerts.GetByID(deleted)", func(ctx context.Context) (*models.Alert, error) {
		a, _, err := w.Alerts.GetByID(ctx, agentIDs[1])
		return a, err
	}); !errContains(err, "object not found") {
		t.Fatalf("get deleted alert %d: err %v, want \"object not found\"", agentIDs[1], err)
	}
	expectLive("192.0.2.11")

	// cscli alerts delete --all: DELETE /v1/alerts?limit=0.
	delAll := mustCall(t, "Alerts.Delete(all)", func(ctx context.Context) (*models.DeleteAlertsResponse, error) {
		r, _, err := w.Alerts.Delete(ctx, apiclient.AlertsDeleteOpts{Limit: ptr(0)})
		return r, err
	})
	if delAll == nil || delAll.NbDeleted != "3" {
		t.Fatalf("delete all alerts: %+v, want nbDeleted \"3\"", delAll)
	}
	if left := listAlerts(t, w, nil); len(left) != 0 {
		t.Fatalf("alerts left after delete all: %v", alertIDs(left))
	}
	expectLive("10.0.0.7")
}

// TestWatcherLargeGzipBatch pushes a batch of agent alerts whose JSON is far
// above the client's 5 KiB compression threshold, so the request body is
// gzipped (Content-Encoding: gzip), and more than 50 alerts (the reference
// inserts in chunks of 50).
func TestWatcherLargeGzipBatch(t *testing.T) {
	s := StartServer(t)
	w := addMachine(t, s, "agent-big", "e2e-agent-big-password-0123456789")

	const n = 60
	batch := make([]*models.Alert, 0, n)
	for i := range n {
		batch = append(batch, agentAlert(fmt.Sprintf("198.51.100.%d", i+1), "crowdsecurity/http-probing", 8))
	}
	body, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) <= 5*1024 {
		t.Fatalf("batch is only %d bytes; the test needs > 5 KiB to make the client gzip it", len(body))
	}

	ids := pushAlerts(t, w, batch...)
	seen := map[int]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("duplicate alert id %d in %v", id, ids)
		}
		seen[id] = true
	}

	got := listAlerts(t, w, nil)
	if !sameIDs(alertIDs(got), ids) {
		t.Fatalf("alerts list after batch: %d alerts %v, want ids %v", len(got), alertIDs(got), ids)
	}
	for _, a := range got {
		if len(a.Events) != 8 {
			t.Fatalf("alert %d: %d events, want 8", a.ID, len(a.Events))
		}
		if len(a.Decisions) != 1 || a.Source == nil || str(a.Decisions[0].Value) != str(a.Source.Value) {
			t.Fatalf("alert %d: decisions %s, want one ban on its source", a.ID, fmtDecisions(a.Decisions))
		}
	}

	// The order of ids follows the order of the batch.
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("alert ids not increasing with batch order: %v", ids)
		}
	}
	last := getAlert(t, w, ids[n-1])
	if want := fmt.Sprintf("198.51.100.%d", n); last.Source == nil || str(last.Source.Value) != want {
		t.Fatalf("alert %d: source %+v, want %s", ids[n-1], last.Source, want)
	}
}
