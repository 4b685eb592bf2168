package capi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/capi/capitest"
	"github.com/halapi/halapi/fsm"
	"github.com/prometheus/client_golang/prometheus"
)

func storeCreds(t *testing.T, a *localApplier, c Credentials, registered bool) {
	t.Helper()
	b, _ := json.Marshal(storedCredentials{Credentials: c, Registered: registered, Source: "test"})
	a.mustApply(t, fsm.CmdSetConfig, fsm.SetConfig{Key: KeyCredentials, Value: b})
}

func startService(t *testing.T, cfg Config, a *localApplier, logs *logBuffer) *Service {
	t.Helper()
	if logs == nil {
		logs = &logBuffer{}
	}
	s := New(cfg, a.f, a, newLogger(logs))
	t.Cleanup(s.Close)
	s.OnLeadership(true)
	return s
}

func TestServiceRunsOnlyWhileLeaderAndStopsAtOnce(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	creds := fakeCreds(fake, "lapi")
	cfg.Credentials = &creds
	a := newLocal()
	addMachine(t, a, "agent1", "crowdsecurity/ssh-bf,crowdsecurity/http-probing")
	a.leader.Store(false)
	s := New(cfg, a.f, a, newLogger(&logBuffer{}))
	t.Cleanup(s.Close)
	s.OnLeadership(false)
	time.Sleep(50 * time.Millisecond) // nothing may happen on a follower
	if n := len(fake.Requests("")); n != 0 || s.Running() {
		t.Fatalf("follower called CAPI %d times", n)
	}

	a.leader.Store(true)
	s.OnLeadership(true)
	s.OnLeadership(true) // idempotent
	waitFor(t, "first pull, metrics and a push cursor", 5*time.Second, func() bool {
		_, ok := readPush(a.f)
		return fake.Count(capitest.Stream) == 1 && fake.Count(capitest.Metrics) == 1 && ok
	})
	if q := fake.Requests(capitest.Stream)[0].Query; q.Get("startup") != "true" {
		t.Fatalf("first pull of a leadership must send startup=true: %v", q)
	}
	if got := fake.LoginScenarios("lapi"); len(got) != 2 {
		t.Fatalf("login scenarios %v", got)
	}
	pushAlerts(t, a, "agent1", agentAlert(1, "h", "1", "crowdsec"))
	waitFor(t, "the signal", 5*time.Second, func() bool { return len(fake.Signals()) == 1 })
	waitFor(t, "the cursor stored after the push", 5*time.Second, func() bool { return s.Status().SignalsPushed == 1 })
	st := s.Status()
	if !st.Active || st.State != "running" || st.Login != "lapi" || st.PushCursor != 1 || st.LastPull == nil || !st.TokenValid {
		t.Fatalf("status %+v", st)
	}

	// a slow CAPI call in flight when leadership goes: cancelled at once
	fake.Script(capitest.Signals, capitest.Response{Delay: 30 * time.Second})
	pushAlerts(t, a, "agent1", agentAlert(2, "h", "1", "crowdsec"))
	waitFor(t, "the push to start", 5*time.Second, func() bool { return fake.Count(capitest.Signals) == 1 && fake.InFlight(capitest.Signals) == 1 })
	start := time.Now()
	a.leader.Store(false)
	s.OnLeadership(false)
	waitFor(t, "loops to stop", 2*time.Second, func() bool { return !s.Running() })
	waitFor(t, "the in-flight call to be abandoned", 2*time.Second, func() bool { return fake.Count(capitest.Signals) == 2 })
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("stopping took %v", d)
	}
	if r := fake.Requests(capitest.Signals)[1]; r.Status != 499 {
		t.Fatalf("in-flight call status %d, want abandoned by the client", r.Status)
	}
	before := len(fake.Requests(""))
	time.Sleep(100 * time.Millisecond)
	if after := len(fake.Requests("")); after != before {
		t.Fatalf("a former leader kept calling CAPI (%d → %d)", before, after)
	}
	if st := s.Status(); st.Active || st.State != "follower" || st.SignalsPushed != 1 {
		t.Fatalf("status after loss %+v", st)
	}
	// the unsent signal is still pending in the replicated cursor
	if p, _ := readPush(a.f); p.Cursor != 1 {
		t.Fatalf("cursor %+v", p)
	}
	// leader again: carries on from the cursor, and a new startup pull
	fake.Script(capitest.Signals) // nothing scripted
	a.leader.Store(true)
	s.OnLeadership(true)
	waitFor(t, "the pending signal", 5*time.Second, func() bool { return len(fake.Signals()) == 2 })
	waitFor(t, "second startup pull", 5*time.Second, func() bool { return fake.Count(capitest.Stream) == 2 })
	if q := fake.Requests(capitest.Stream)[1].Query; q.Get("startup") != "true" {
		t.Fatal("a new leadership must send startup=true again")
	}
	if n := fake.Count(capitest.Login); n != 1 {
		t.Fatalf("logins = %d: the cached token must be reused", n)
	}
}

func TestTokenFromReplicatedStateMeansNoLogin(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	a := newLocal()
	storeCreds(t, a, fakeCreds(fake, "lapi"), true)
	tok := fake.IssueToken("lapi", time.Hour)
	a.mustApply(t, fsm.CmdSetConfig, fsm.SetConfig{Key: KeyToken, Value: []byte(tok)})
	startService(t, cfg, a, nil)
	waitFor(t, "metrics", 5*time.Second, func() bool { return fake.Count(capitest.Metrics) == 1 })
	if n := fake.Count(capitest.Login); n != 0 {
		t.Fatalf("logins = %d", n)
	}
	if h := fake.Requests(capitest.Metrics)[0].Header.Get("Authorization"); h != "Bearer "+tok {
		t.Fatalf("auth %q", h)
	}
}

func TestExpiringStoredTokenLeadsToLoginAndIsReplaced(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	a := newLocal()
	storeCreds(t, a, fakeCreds(fake, "lapi"), true)
	old := fake.IssueToken("lapi", 30*time.Second)
	a.mustApply(t, fsm.CmdSetConfig, fsm.SetConfig{Key: KeyToken, Value: []byte(old)})
	startService(t, cfg, a, nil)
	waitFor(t, "login and the new token stored", 5*time.Second, func() bool {
		tok := a.f.Config(KeyToken)
		return fake.Count(capitest.Login) == 1 && tok != nil && string(tok) != old
	})
}

func TestRegisterOnFirstLeadershipOnly(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.Register = true
	a := newLocal()
	s := startService(t, cfg, a, nil)
	waitFor(t, "registration", 5*time.Second, func() bool {
		sc := readCredentials(a.f)
		return sc != nil && fake.Count(capitest.Metrics) == 1
	})
	sc := readCredentials(a.f)
	if w := fake.Watchers(); w[sc.Login] != sc.Password || len(sc.Login) != 48 || sc.URL != fake.BaseURL() {
		t.Fatalf("registered %+v, fake has %v", sc, w)
	}
	s.OnLeadership(false)
	s.Close()
	// another leader: no second registration, no login (token reused)
	s2 := startService(t, cfg, a, nil)
	waitFor(t, "second leader's metrics", 5*time.Second, func() bool { return fake.Count(capitest.Metrics) == 2 })
	if fake.Count(capitest.Register) != 1 || fake.Count(capitest.Login) != 1 {
		t.Fatalf("register %d, login %d", fake.Count(capitest.Register), fake.Count(capitest.Login))
	}
	_ = s2
}

func TestPendingRegistrationFinishedByNextLeader(t *testing.T) {
	fake := newFake(t)
	fake.SetRejectDuplicateRegistration(true)
	cfg := testConfig(fake)
	a := newLocal()
	// the previous leader chose these, CAPI accepted them, then it died
	// before storing them as the cluster's credentials
	c := fakeCreds(fake, "pending-one")
	b, _ := json.Marshal(registerRequest{At: 1, Pending: &c})
	a.mustApply(t, fsm.CmdSetConfig, fsm.SetConfig{Key: KeyRegisterRequest, Value: b})
	startService(t, cfg, a, nil)
	waitFor(t, "credentials stored and the request cleared", 5*time.Second, func() bool {
		sc := readCredentials(a.f)
		return sc != nil && sc.Login == "pending-one" && a.f.Config(KeyRegisterRequest) == nil &&
			fake.Count(capitest.Metrics) == 1
	})
	if fake.Count(capitest.Register) != 1 || fake.Requests(capitest.Register)[0].Status != 403 {
		t.Fatal("expected one refused registration then a login")
	}
}

func TestFailedForcedRegistrationKeepsWorkingCredentials(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.MetricsCheckInterval = 5 * time.Millisecond
	a := newLocal()
	storeCreds(t, a, fakeCreds(fake, "current"), true)
	var fails []capitest.Response
	for i := 0; i < 6; i++ {
		fails = append(fails, capitest.Response{Status: 500, Body: `{"message":"registration down"}`})
	}
	fake.Script(capitest.Register, fails...)
	s := startService(t, cfg, a, nil)
	waitFor(t, "running", 5*time.Second, func() bool { return fake.Count(capitest.Metrics) == 1 })
	if err := s.RequestRegistration(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the failure recorded", 5*time.Second, func() bool {
		st := s.Status()
		return st.RegisterPending && strings.Contains(st.RegisterError, "registration down")
	})
	var req registerRequest
	readJSON(a.f, KeyRegisterRequest, &req)
	if sc := readCredentials(a.f); sc.Login != "current" || req.Pending == nil {
		t.Fatalf("credentials replaced before CAPI accepted the new ones: %+v", sc)
	}
	// the loops still work with the current credentials meanwhile
	addMachine(t, a, "agent1", "crowdsecurity/ssh-bf")
	waitFor(t, "a pull with the current credentials", 20*time.Second, func() bool { return fake.Count(capitest.Stream) >= 1 })
	// CAPI recovers: the same pending ids get registered and used
	waitFor(t, "new credentials in use", 10*time.Second, func() bool {
		sc := readCredentials(a.f)
		return sc.Login == req.Pending.Login && a.f.Config(KeyRegisterRequest) == nil
	})
	for _, r := range fake.Requests(capitest.Register) {
		if !strings.Contains(string(r.Body), req.Pending.Login) {
			t.Fatal("a retry chose other ids")
		}
	}
}

func TestCredentialsFileImportedOncePerContent(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	creds := fakeCreds(fake, "from-file")
	cfg.Credentials = &creds
	a := newLocal()
	s := startService(t, cfg, a, nil)
	waitFor(t, "import", 5*time.Second, func() bool {
		sc := readCredentials(a.f)
		return sc != nil && sc.Login == "from-file" && sc.Source == "file" && fake.Count(capitest.Metrics) == 1
	})
	// forced registration replaces them (the running loops switch)
	if err := s.RequestRegistration(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new credentials in use", 5*time.Second, func() bool {
		sc := readCredentials(a.f)
		return sc != nil && sc.Source == "register" && a.f.Config(KeyRegisterRequest) == nil &&
			fake.Count(capitest.Metrics) == 2
	})
	newLogin := readCredentials(a.f).Login
	s.OnLeadership(false)
	s.Close()
	// the same file on the next leader is not imported again
	startService(t, cfg, a, nil)
	waitFor(t, "next leader running", 5*time.Second, func() bool { return fake.Count(capitest.Metrics) == 3 })
	if sc := readCredentials(a.f); sc.Login != newLogin {
		t.Fatalf("file re-imported over a later registration: %s", sc.Login)
	}
	if r := fake.Requests(capitest.Metrics)[2]; r.Header.Get("Authorization") == fake.Requests(capitest.Metrics)[0].Header.Get("Authorization") {
		t.Fatal("still using the old login's token")
	}
}

func TestUnreachableCAPIOneWarningPerStreak(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.MetricsInterval = 5 * time.Millisecond
	c := fakeCreds(fake, "lapi")
	a := newLocal()
	storeCreds(t, a, c, true)
	var fails []capitest.Response
	for i := 0; i < 12; i++ {
		fails = append(fails, capitest.Response{Status: 503, Body: `{"message":"down"}`})
	}
	fake.Script(capitest.Login, fails...)
	var logs logBuffer
	s := startService(t, cfg, a, &logs)
	waitFor(t, "recovery", 10*time.Second, func() bool { return logs.count("CAPI reachable again") == 1 })
	if n := logs.count("level=WARN msg=\"CAPI call failed"); n != 1 {
		t.Fatalf("%d warnings for one failure streak:\n%s", n, logs.String())
	}
	st := s.Status()
	if st.ErrorCount == 0 || st.FailureStreak != 0 || !strings.Contains(st.LastError, "503") {
		t.Fatalf("status %+v", st)
	}
	fams, err := registryWith(s).Gather()
	names := map[string]bool{}
	var login503 float64
	for _, f := range fams {
		names[f.GetName()] = true
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if f.GetName() == "halapi_capi_requests_total" && labels["endpoint"] == epLogin && labels["result"] == "503" {
				login503 = m.GetCounter().GetValue()
			}
		}
	}
	if err != nil || !names["halapi_capi_requests_total"] || !names["halapi_capi_decisions"] || !names["halapi_capi_failure_streak"] {
		t.Fatalf("metrics %v %v", names, err)
	}
	if v := login503; v != 12 {
		t.Fatalf("login 503 counted %v times", v)
	}
}

func registryWith(s *Service) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(s.Collector())
	return r
}

func TestMetricsAndUsageMetrics(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.UsageMetricsInterval = 20 * time.Millisecond
	a := newLocal()
	storeCreds(t, a, fakeCreds(fake, "lapi"), true)
	addMachine(t, a, "agent1", "crowdsecurity/ssh-bf")
	a.mustApply(t, fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: fsm.Bouncer{Name: "fw1", Type: "crowdsec-firewall-bouncer",
		Version: "v0.0.30", AuthType: fsm.AuthAPIKey, KeyHash: "x"}})
	fake.Script(capitest.UsageMetrics, capitest.Response{Status: 422, Body: `{"message":"nope"}`},
		capitest.Response{Status: 500}, capitest.Response{Status: 500}, capitest.Response{Status: 500})
	s := startService(t, cfg, a, nil)
	waitFor(t, "metrics and 3 usage-metrics calls", 5*time.Second, func() bool {
		return fake.Count(capitest.Metrics) == 1 && fake.Count(capitest.UsageMetrics) >= 5
	})
	m := fake.Requests(capitest.Metrics)[0]
	if m.Path != "/v3/metrics/" {
		t.Fatalf("path %s", m.Path)
	}
	var mp MetricsPayload
	if err := json.Unmarshal(m.Body, &mp); err != nil || mp.ApilVersion == "" || len(mp.Machines) != 1 || len(mp.Bouncers) != 1 ||
		mp.Machines[0].LastPush != "0001-01-01T00:00:00Z" || mp.Bouncers[0].Name != "crowdsec-firewall-bouncer" ||
		mp.Bouncers[0].CustomName != "fw1" || mp.Bouncers[0].LastPull != "" {
		t.Fatalf("metrics %s (%v)", m.Body, err)
	}
	var up map[string]any
	if err := json.Unmarshal(fake.Requests(capitest.UsageMetrics)[0].Body, &up); err != nil {
		t.Fatal(err)
	}
	lapiEntry := up["lapi"].(map[string]any)
	if co := lapiEntry["console_options"].([]any); len(co) != 1 || co[0] != "custom,tainted" {
		t.Fatalf("console options %v", co)
	}
	lp := up["log_processors"].([]any)[0].(map[string]any)
	if lp["name"] != "agent1" || lp["datasources"] == nil || lp["hub_items"] == nil {
		t.Fatalf("log processor %v", lp)
	}
	if rc := up["remediation_components"].([]any)[0].(map[string]any); rc["type"] != "crowdsec-firewall-bouncer" {
		t.Fatalf("remediation component %v", rc)
	}
	// 422 counted as sent; 500 (after the client's retries) an error
	// retried on the next run, which succeeds
	waitFor(t, "usage status", 5*time.Second, func() bool {
		st := s.Status()
		return st.LastUsageMetrics != nil && st.ErrorCount == 1 && strings.Contains(st.LastError, "usage_metrics") &&
			st.FailureStreak == 0
	})
}

func TestAdminRoutes(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.Cluster = func(context.Context) (string, string, string) { return "n1", "n1", "http://n1/" }
	a := newLocal()
	s := startService(t, cfg, a, nil)
	r := mux.NewRouter()
	s.AdminRoutes(r.PathPrefix("/admin/v1").Subrouter())
	srv := httptest.NewServer(r)
	defer srv.Close()

	get := func() StatusView {
		resp, err := http.Get(srv.URL + "/admin/v1/capi/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st StatusView
		_ = json.NewDecoder(resp.Body).Decode(&st)
		return st
	}
	waitFor(t, "no-credentials state", 5*time.Second, func() bool { return get().State == "no credentials" })
	st := get()
	if st.Leader != "n1" || st.Registered || !st.Enabled {
		t.Fatalf("status %+v", st)
	}
	resp, err := http.Post(srv.URL+"/admin/v1/capi/register", "application/json", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	var rr RegisterResponse
	_ = json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if resp.StatusCode != 200 || !rr.Status.Registered || !strings.Contains(rr.Message, "registered") {
		t.Fatalf("register: %d %+v", resp.StatusCode, rr)
	}
	// second time: already registered, nothing sent
	resp, _ = http.Post(srv.URL+"/admin/v1/capi/register", "application/json", nil)
	_ = json.NewDecoder(resp.Body).Decode(&rr)
	resp.Body.Close()
	if !strings.Contains(rr.Message, "already registered") || fake.Count(capitest.Register) != 1 {
		t.Fatalf("%+v", rr)
	}
	waitFor(t, "running", 5*time.Second, func() bool { return get().State == "running" })
}

func TestDisabledServiceDoesNothing(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.Disabled = true
	cfg.Register = true
	a := newLocal()
	s := startService(t, cfg, a, nil)
	time.Sleep(50 * time.Millisecond)
	if len(fake.Requests("")) != 0 || s.Running() || s.Status().State != "disabled" {
		t.Fatal("disabled service acted")
	}
}
