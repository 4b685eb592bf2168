package capi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
	"github.com/halapi/halapi/fsm"
)

func TestSharingRules(t *testing.T) {
	dec := func(origin string) []*fsm.Decision { return []*fsm.Decision{{Origin: origin}} }
	certified := &fsm.Alert{ScenarioHash: "h", ScenarioVersion: "0.1"}
	custom := &fsm.Alert{}
	tainted := &fsm.Alert{ScenarioHash: "h", ScenarioVersion: "?"}
	taintedNoVersion := &fsm.Alert{ScenarioHash: "h"}
	simulated := &fsm.Alert{ScenarioHash: "h", ScenarioVersion: "0.1", Simulated: true}
	def := DefaultConsoleOptions()
	all := ConsoleOptions{ShareManualDecisions: true, ShareCustom: true, ShareTainted: true}
	none := ConsoleOptions{}
	cases := []struct {
		name    string
		a       *fsm.Alert
		ds      []*fsm.Decision
		sharing bool
		opts    ConsoleOptions
		trust   string
		share   bool
	}{
		{"certified", certified, dec("crowdsec"), true, none, TrustCertified, true},
		{"certified without decisions", certified, nil, true, none, TrustCertified, true},
		{"sharing off", certified, dec("crowdsec"), false, all, TrustCertified, false},
		{"simulated", simulated, dec("crowdsec"), true, all, TrustCertified, false},
		{"custom default", custom, dec("crowdsec"), true, def, TrustCustom, true},
		{"custom off", custom, dec("crowdsec"), true, none, TrustCustom, false},
		{"tainted ?", tainted, dec("crowdsec"), true, def, TrustTainted, true},
		{"tainted empty version", taintedNoVersion, dec("crowdsec"), true, none, TrustTainted, false},
		{"manual default", certified, dec("cscli"), true, def, TrustManual, false},
		{"manual on", custom, dec("cscli"), true, all, TrustManual, true},
		{"cscli-import stays custom", custom, dec("cscli-import"), true, def, TrustCustom, true},
		{"only the first decision counts", certified, []*fsm.Decision{{Origin: "crowdsec"}, {Origin: "cscli"}}, true, none, TrustCertified, true},
	}
	for _, c := range cases {
		if got := ScenarioTrust(c.a, c.ds); got != c.trust {
			t.Errorf("%s: trust %s, want %s", c.name, got, c.trust)
		}
		if got := ShouldShare(c.a, c.ds, c.sharing, c.opts); got != c.share {
			t.Errorf("%s: share %v, want %v", c.name, got, c.share)
		}
	}
	if got := strings.Join(ConsoleOptions{ShareManualDecisions: true, ShareCustom: true, ShareTainted: true,
		ShareContext: true, ConsoleManagement: true}.Enabled(), ","); got != "custom,tainted,manual,console_management,context" {
		t.Fatalf("enabled options order: %s", got)
	}
}

func TestBuildSignal(t *testing.T) {
	start := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	a := &fsm.Alert{ID: 7, UUID: "u-1", MachineID: "agent1", CreatedAt: start.Add(time.Second).UnixNano(),
		Scenario: "crowdsecurity/ssh-bf", ScenarioHash: "abc", ScenarioVersion: "0.3", Message: "Ip 1.2.3.4 performed ssh-bf",
		StartAt: start.UnixNano(), StopAt: start.UnixNano(),
		Source: fsm.Source{Scope: "Ip", Value: "1.2.3.4", IP: "1.2.3.4", Cn: "FR", AsNumber: "3215", AsName: "Orange", Latitude: 48.8},
		Meta:   []fsm.KV{{Key: "target_user", Value: "root"}}}
	ds := []*fsm.Decision{{ID: 99, UUID: fsm.MustUUID("00000000-0000-4000-8000-0000000000d1"), Origin: "crowdsec", Type: "ban", Scope: "Ip", Value: "1.2.3.4",
		Scenario: "crowdsecurity/ssh-bf", Until: start.Add(4 * time.Hour).UnixNano()}}

	sg := BuildSignal(a, ds, TrustCertified, false)
	b, _ := json.Marshal(sg)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if m["context"] != nil {
		t.Fatalf("context must be null without share_context: %s", b)
	}
	if _, ok := m["created_at"]; ok {
		t.Fatalf("created_at must be omitted for agent alerts: %s", b)
	}
	if _, ok := m["alert_id"]; ok {
		t.Fatal("alert_id must not be set")
	}
	if m["uuid"] != "u-1" || m["machine_id"] != "agent1" || m["scenario_trust"] != "certified" ||
		m["start_at"] != "2024-05-01T10:00:00Z" || m["scenario_hash"] != "abc" {
		t.Fatalf("signal %s", b)
	}
	src := m["source"].(map[string]any)
	if src["cn"] != "FR" || src["as_name"] != "Orange" || src["range"] != nil {
		t.Fatalf("source %v", src)
	}
	d := m["decisions"].([]any)[0].(map[string]any)
	if d["id"] != float64(0) || d["duration"] != "4h" || d["uuid"] != "00000000-0000-4000-8000-0000000000d1" || d["origin"] != "crowdsec" {
		t.Fatalf("decision %v", d)
	}
	if _, ok := d["until"]; ok {
		t.Fatal("until must be omitted")
	}
	if _, ok := d["simulated"]; ok {
		t.Fatal("simulated must be omitted when false")
	}

	sg = BuildSignal(a, nil, TrustManual, true)
	b, _ = json.Marshal(sg)
	m = nil
	_ = json.Unmarshal(b, &m)
	if _, ok := m["decisions"]; ok {
		t.Fatalf("decisions must be omitted when empty: %s", b)
	}
	ctx := m["context"].([]any)
	if len(ctx) != 1 || ctx[0].(map[string]any)["key"] != "target_user" {
		t.Fatalf("context %v", ctx)
	}
	if m["created_at"] != "2024-05-01T10:00:01Z" {
		t.Fatalf("manual alerts carry created_at: %s", b)
	}
	for in, want := range map[time.Duration]string{4 * time.Hour: "4h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s",
		36 * time.Hour: "36h", 1500 * time.Millisecond: "2s", -time.Second: "0s"} {
		if got := formatDuration(in); got != want {
			t.Errorf("formatDuration(%v) = %s, want %s", in, got, want)
		}
	}
}

// newPushService: a service (loops not started) with a logged-in client.
func newUnstarted(t *testing.T, fake *capitest.Server, cfg Config) (*Service, *localApplier, *Client) {
	t.Helper()
	a := newLocal()
	s := New(cfg, a.f, a, newLogger(&logBuffer{}))
	cl, err := NewClient(&s.cfg, fakeCreds(fake, "lapi"))
	if err != nil {
		t.Fatal(err)
	}
	cl.Observe = s.metrics.observe
	return s, a, cl
}

func TestPushBatchesAdvanceTheReplicatedCursor(t *testing.T) {
	fake := newFake(t)
	s, a, cl := newUnstarted(t, fake, testConfig(fake))
	ctx := context.Background()
	addMachine(t, a, "agent1", "crowdsecurity/ssh-bf")
	// alerts before the first leadership are not pushed (reference: only
	// alerts received while running)
	pushAlerts(t, a, "agent1", agentAlert(0, "h", "1", "crowdsec"))
	st, err := s.loadCursor(ctx)
	if err != nil || st.Cursor != 1 {
		t.Fatalf("cursor %+v %v", st, err)
	}
	var want []string
	var batch []fsm.NewAlert
	for i := 1; i <= 130; i++ {
		origin := "crowdsec"
		if i%10 == 0 {
			origin = "cscli" // manual: not shared by default
		} else {
			want = append(want, batch2uuid(i))
		}
		batch = append(batch, agentAlert(i, "h", "1", origin))
	}
	pushAlerts(t, a, "agent1", batch...)
	// a pulled alert is never pushed
	a.mustApply(t, fsm.CmdImportDecisions, fsm.ImportDecisions{Alert: pullAlert(CommunitySourceScope, 1, 0, time.Now()),
		Decisions: []fsm.Decision{{Origin: OriginCAPI, Type: "ban", Scope: "Ip", Value: "203.0.113.1", Scenario: "x",
			Until: time.Now().Add(time.Hour).UnixNano()}}})
	st, err = s.pushOnce(ctx, cl, st)
	if err != nil {
		t.Fatal(err)
	}
	reqs := fake.Requests(capitest.Signals)
	if len(reqs) != 3 {
		t.Fatalf("%d signal batches, want 3 (50+50+17)", len(reqs))
	}
	var got []string
	for _, sg := range fake.Signals() {
		got = append(got, sg.UUID())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("pushed %d signals, want %d in order", len(got), len(want))
	}
	for _, r := range reqs {
		var arr []any
		_ = json.Unmarshal(r.Body, &arr)
		if len(arr) > 50 {
			t.Fatalf("batch of %d", len(arr))
		}
	}
	p, _ := readPush(a.f)
	if p.Cursor != a.f.LastAlertID() || p.Pushed != int64(len(want)) || p.LastPush == 0 || st.Cursor != p.Cursor {
		t.Fatalf("replicated cursor %+v (last alert %d)", p, a.f.LastAlertID())
	}
	// nothing new: no call
	if _, err := s.pushOnce(ctx, cl, st); err != nil || fake.Count(capitest.Signals) != 3 {
		t.Fatalf("idle push: %v, %d calls", err, fake.Count(capitest.Signals))
	}
}

func batch2uuid(i int) string { return agentAlert(i, "", "", "").Alert.UUID }

func TestFailedPushKeepsSignalsPending(t *testing.T) {
	fake := newFake(t)
	s, a, cl := newUnstarted(t, fake, testConfig(fake))
	ctx := context.Background()
	st, _ := s.loadCursor(ctx)
	pushAlerts(t, a, "", agentAlert(1, "h", "1", "crowdsec"), agentAlert(2, "h", "1", "crowdsec"))
	fake.Script(capitest.Signals, capitest.Response{Status: 503}, capitest.Response{Status: 503}, capitest.Response{Status: 503})
	st2, err := s.pushOnce(ctx, cl, st)
	if err == nil || st2.Cursor != st.Cursor {
		t.Fatalf("failed push must keep the cursor: %v %+v", err, st2)
	}
	if p, _ := readPush(a.f); p.Cursor != st.Cursor {
		t.Fatalf("replicated cursor moved: %+v", p)
	}
	st2, err = s.pushOnce(ctx, cl, st2)
	if err != nil || len(fake.Signals()) != 2 || st2.Cursor != 2 {
		t.Fatalf("retry: %v, %d signals, %+v", err, len(fake.Signals()), st2)
	}
	// a refused batch (400) is skipped, not retried forever
	pushAlerts(t, a, "", agentAlert(3, "h", "1", "crowdsec"))
	fake.Script(capitest.Signals, capitest.Response{Status: 400, Body: `{"message":"bad signal"}`})
	st2, err = s.pushOnce(ctx, cl, st2)
	if err != nil || st2.Cursor != 3 {
		t.Fatalf("refused batch: %v %+v", err, st2)
	}
}

func TestSharingOffOnlyMovesTheCursor(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.Sharing = false
	s, a, cl := newUnstarted(t, fake, cfg)
	ctx := context.Background()
	st, _ := s.loadCursor(ctx)
	pushAlerts(t, a, "", agentAlert(1, "h", "1", "crowdsec"))
	st, err := s.pushOnce(ctx, cl, st)
	if err != nil || st.Cursor != 1 || fake.Count(capitest.Signals) != 0 {
		t.Fatalf("%v %+v %d", err, st, fake.Count(capitest.Signals))
	}
}
