package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"

	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// loginToken logs in with the client library and returns the JWT.
func loginToken(t testing.TB, s *Server, machineID, password string) string {
	t.Helper()

	c := newWatcher(t, s, machineID, password)
	r := mustCall(t, "Auth.AuthenticateWatcher", func(ctx context.Context) (models.WatcherAuthResponse, error) {
		pw := strfmt.Password(password)
		m := machineID
		r, _, err := c.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{MachineID: &m, Password: &pw})
		return r, err
	})
	if r.Token == "" {
		t.Fatalf("login of %s: empty token", machineID)
	}

	return r.Token
}

// heartbeatWithToken sends GET /v1/heartbeat with a given bearer token and
// returns the status (no client library: its transport would silently log in
// again and hide a refused token).
func heartbeatWithToken(t testing.TB, s *Server, token string) int {
	t.Helper()

	return mustCall(t, "GET /v1/heartbeat", func(ctx context.Context) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"v1/heartbeat", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("User-Agent", watcherUA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	})
}

// alertDigest is what must be identical before and after a restart.
func alertDigest(a *models.Alert) string {
	ds := slices.Clone(a.Decisions)
	slices.SortFunc(ds, func(x, y *models.Decision) int { return int(x.ID - y.ID) })
	parts := ""
	for _, d := range ds {
		parts += fmt.Sprintf(" {%d %s %s %s %s %s}", d.ID, str(d.Origin), str(d.Type), str(d.Scope), str(d.Value), str(d.Scenario))
	}
	src := ""
	if a.Source != nil {
		src = str(a.Source.Scope) + ":" + str(a.Source.Value)
	}
	return fmt.Sprintf("id=%d machine=%s scenario=%q source=%s created=%s start=%s stop=%s events=%d decisions=[%s]",
		a.ID, a.MachineID, str(a.Scenario), src, a.CreatedAt, str(a.StartAt), str(a.StopAt), len(a.Events), parts)
}

// TestPersistenceAfterSIGKILL kills the server with SIGKILL right after
// acknowledged writes and restarts it on the same data dir: machines,
// bouncers, alerts, decisions (including deletions) and the JWT key are all
// still there, and ids keep increasing.
func TestPersistenceAfterSIGKILL(t *testing.T) {
	s := StartServer(t)

	const (
		machine  = "agent-persist"
		password = "e2e-agent-persist-password-0123456789abcdef"
		bouncer  = "fw-persist"
		key      = "e2e-persist-bouncer-key-0123456789abcdef"
	)
	if err := registerWatcher(t, s, machine, password); err != nil {
		t.Fatalf("RegisterClient: %v", err)
	}
	s.MustCLI("machines", "validate", machine)
	addBouncer(t, s, bouncer, key)

	w := newWatcher(t, s, machine, password)
	agentIDs := pushAlerts(t, w, agentAlert("192.0.2.20", "crowdsecurity/ssh-bf", 3), agentAlert("192.0.2.21", "crowdsecurity/ssh-bf", 3))
	ipAlert := addDecision(t, w, "Ip", "1.2.3.4", "1h")
	rangeAlert := addDecision(t, w, "Range", "10.0.0.0/24", "1h")

	// A soft-deleted decision must stay deleted.
	a21 := getAlert(t, w, agentIDs[1])
	if len(a21.Decisions) != 1 {
		t.Fatalf("alert %d: decisions %s, want one", agentIDs[1], fmtDecisions(a21.Decisions))
	}
	if n := deleteDecisionByID(t, w, a21.Decisions[0].ID); n != "1" {
		t.Fatalf("delete decision: nbDeleted %q", n)
	}
	// A deleted alert must stay deleted.
	gone := addDecision(t, w, "Ip", "7.7.7.7", "1h")
	del := mustCall(t, "Alerts.DeleteOne", func(ctx context.Context) (*models.DeleteAlertsResponse, error) {
		r, _, err := w.Alerts.DeleteOne(ctx, strconv.Itoa(gone))
		return r, err
	})
	if del == nil || del.NbDeleted != "1" {
		t.Fatalf("delete alert %d: %+v", gone, del)
	}

	// The bouncer's first contact (records its IP) before the crash.
	lb := newLiveBouncer(t, s, key)
	if got := liveGet(t, lb, "1.2.3.4"); len(got) != 1 {
		t.Fatalf("before restart: Get(1.2.3.4) = %s", fmtDecisions(got))
	}

	token := loginToken(t, s, machine, password)

	before := listAlerts(t, w, nil)
	wantIDs := []int{agentIDs[0], agentIDs[1], ipAlert, rangeAlert}
	if !sameIDs(alertIDs(before), wantIDs) {
		t.Fatalf("before restart: alert ids %v, want %v", alertIDs(before), wantIDs)
	}
	digests := map[int64]string{}
	for _, a := range before {
		digests[a.ID] = alertDigest(a)
	}

	s.Kill()
	s.Start()

	if _, ok := s.listedObject("machines", machine); !ok {
		t.Errorf("after restart: machines list does not show %s", machine)
	}
	if _, ok := s.listedObject("bouncers", bouncer); !ok {
		t.Errorf("after restart: bouncers list does not show %s", bouncer)
	}

	// The password still logs in.
	loginToken(t, s, machine, password)
	// A token issued before the crash is still accepted (one cluster JWT key,
	// kept in the replicated state).
	if code := heartbeatWithToken(t, s, token); code != http.StatusOK {
		t.Errorf("after restart: heartbeat with a token issued before the crash: status %d, want 200", code)
	}

	w2 := newWatcher(t, s, machine, password)
	after := listAlerts(t, w2, nil)
	if !sameIDs(alertIDs(after), wantIDs) {
		t.Fatalf("after restart: alert ids %v, want %v", alertIDs(after), wantIDs)
	}
	for _, a := range after {
		if got, want := alertDigest(a), digests[a.ID]; got != want {
			t.Errorf("after restart: alert %d changed:\n got  %s\n want %s", a.ID, got, want)
		}
	}

	// Decisions, as a live bouncer with the same key sees them.
	lb2 := newLiveBouncer(t, s, key)
	for _, c := range []struct {
		ip   string
		want []string
	}{
		{"1.2.3.4", []string{"1.2.3.4"}},
		{"10.0.0.7", []string{"10.0.0.0/24"}},
		{"192.0.2.20", []string{"192.0.2.20"}},
		{"192.0.2.21", nil}, // deleted before the crash
		{"7.7.7.7", nil},    // its alert was deleted before the crash
	} {
		got := liveGet(t, lb2, c.ip)
		var values []string
		for _, d := range got {
			values = append(values, str(d.Value))
		}
		if !slices.Equal(values, c.want) {
			t.Errorf("after restart: Get(%s) = %s, want values %v", c.ip, fmtDecisions(got), c.want)
		}
	}

	// A stream bouncer starting now gets the active set in "new" and the
	// soft-deleted decision in "deleted".
	r := startStream(t, s, key)
	first := r.next(t, streamWait)
	var newValues []string
	for _, d := range first.New {
		newValues = append(newValues, str(d.Value))
	}
	slices.Sort(newValues)
	if want := []string{"1.2.3.4", "10.0.0.0/24", "192.0.2.20"}; !slices.Equal(newValues, want) {
		t.Errorf("after restart: startup new = %s, want values %v", fmtDecisions(first.New), want)
	}
	if got := decisionsFor(first.Deleted, "192.0.2.21"); len(got) != 1 || got[0].ID != a21.Decisions[0].ID {
		t.Errorf("after restart: startup deleted = %s, want decision %d (192.0.2.21)", fmtDecisions(first.Deleted), a21.Decisions[0].ID)
	}
	if got := decisionsFor(slices.Concat(first.New, first.Deleted), "7.7.7.7"); len(got) != 0 {
		t.Errorf("after restart: decision of a deleted alert came back: %s", fmtDecisions(got))
	}

	// New writes get ids above every id handed out before the crash.
	newAlert := addDecision(t, w2, "Ip", "8.8.4.4", "1h")
	if newAlert <= gone {
		t.Fatalf("after restart: new alert id %d, want > %d (ids are never reused)", newAlert, gone)
	}
	na := getAlert(t, w2, newAlert)
	maxDecision := a21.Decisions[0].ID
	for _, a := range before {
		for _, d := range a.Decisions {
			maxDecision = max(maxDecision, d.ID)
		}
	}
	if len(na.Decisions) != 1 || na.Decisions[0].ID <= maxDecision {
		t.Fatalf("after restart: new decision %s, want an id > %d", fmtDecisions(na.Decisions), maxDecision)
	}

	// A write acknowledged just before a second crash survives it too.
	s.Kill()
	s.Start()
	if a := getAlert(t, w2, newAlert); len(a.Decisions) != 1 || str(a.Decisions[0].Value) != "8.8.4.4" {
		t.Fatalf("after second restart: alert %d = %s", newAlert, alertDigest(a))
	}
	got := liveGet(t, lb2, "8.8.4.4")
	if len(got) != 1 {
		t.Fatalf("after second restart: Get(8.8.4.4) = %s, want the ban", fmtDecisions(got))
	}
	checkDecision(t, "after second restart: Get(8.8.4.4)", got[0], "cscli", "ban", "Ip", "8.8.4.4")
	checkDuration(t, "after second restart: Get(8.8.4.4)", got[0].Duration, time.Hour, 2*time.Minute)
}
