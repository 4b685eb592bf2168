package lapi

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestHealthAndUnknownRoutes(t *testing.T) {
	e := newEnv(t)
	r := e.expect(e.do("GET", "/health", nil), 200)
	if r.body != `{"status":"up"}` || r.hdr.Get("Cache-Control") != "no-cache" {
		t.Fatalf("health: %q %v", r.body, r.hdr)
	}
	e.expect(e.do("HEAD", "/health", nil), 405)
	if r := e.expect(e.do("GET", "/v1/nope", nil), 404); r.body != "" {
		t.Fatalf("404 body %q", r.body)
	}
	if r := e.expect(e.do("POST", "/v1/heartbeat", nil), 405); r.body != "" {
		t.Fatalf("405 body %q", r.body)
	}
}

func TestRegisterAndLogin(t *testing.T) {
	e := newEnv(t)
	e.expect(e.do("POST", "/v1/watchers", `{"machine_id":`), 400)
	r := e.expect(e.do("POST", "/v1/watchers", `{}`), 422)
	if !strings.Contains(r.body, "machine_id in body is required") || !strings.Contains(r.body, "password in body is required") {
		t.Fatalf("422 body %q", r.body)
	}
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "m1", "password": "p", "registration_token": "short"}), 422)
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "m1", "password": "p"}), 201)
	r = e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "m1", "password": "p"}), 403)
	if !strings.Contains(r.body, "user 'm1': user already exist") {
		t.Fatalf("dup body %q", r.body)
	}
	// pending machine cannot log in
	r = e.expect(e.do("POST", "/v1/watchers/login", map[string]string{"machine_id": "m1", "password": "p"}), 401)
	if !strings.Contains(r.body, "machine m1 not validated") || r.hdr.Get("WWW-Authenticate") == "" {
		t.Fatalf("login pending: %q", r.body)
	}
	e.expect(e.do("POST", "/v1/watchers/login", map[string]string{"machine_id": "nobody", "password": "p"}), 401)
	e.expect(e.do("POST", "/v1/watchers/login", "garbage"), 401)

	tok := e.machine("m2")
	if tok == "" {
		t.Fatal("no token")
	}
	e.expect(e.do("POST", "/v1/watchers/login", map[string]string{"machine_id": "m2", "password": "wrong"}), 401)
	// User-Agent must split in exactly two parts
	e.expect(e.do("POST", "/v1/watchers/login", map[string]string{"machine_id": "m2", "password": "pw-m2"}, withUA("a/b/c")), 401)
	r = e.expect(e.do("POST", "/v1/watchers/login", map[string]string{"machine_id": "m2", "password": "pw-m2"}), 200)
	var out struct {
		Code   int
		Expire string
		Token  string
	}
	r.json(t, &out)
	exp, err := time.Parse(time.RFC3339, out.Expire)
	if err != nil || out.Code != 200 || !exp.Equal(e.now().Add(time.Hour)) {
		t.Fatalf("login answer %+v (%v)", out, err)
	}
	m := e.fsm.Machine("m2")
	if m.Version != "v1.7.6-test-linux" || m.Scenarios != "crowdsecurity/ssh-bf" || m.IP != "127.0.0.1" {
		t.Fatalf("login post-steps not recorded: %+v", m)
	}
}

func TestAutoRegistration(t *testing.T) {
	token := strings.Repeat("t", 32)
	e := newEnv(t, func(c *Config) {
		c.AutoRegToken = token
		c.AutoRegRanges = mustPrefixes("127.0.0.0/8")
	})
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "a", "password": "p", "registration_token": token}), 202)
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "b", "password": "p", "registration_token": strings.Repeat("x", 32)}), 401)
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "c", "password": "p", "registration_token": token}, fromIP("10.1.1.1")), 401)
	if !e.fsm.Machine("a").Validated || e.fsm.Machine("b") != nil {
		t.Fatal("auto-registration state wrong")
	}
}

func TestJWTFailures(t *testing.T) {
	e := newEnv(t)
	r := e.expect(e.do("GET", "/v1/heartbeat", nil), 401)
	if r.body != `{"code":401,"message":"cookie token is empty"}` {
		t.Fatalf("missing token body %q", r.body)
	}
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken("garbage")), 401)
	// signed with another key
	other, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"id": "x", "exp": e.now().Add(time.Hour).Unix()}).SignedString([]byte("other"))
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(other)), 401)
	tok := e.machine("m")
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok)), 200)
	e.advance(61 * time.Minute)
	e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(tok)), 401)
	// refresh accepts an expired token, but only until the login's maximum
	// age (2h): the original login time is kept across refreshes
	e.advance(60 * time.Minute)
	e.expect(e.do("GET", "/v1/refresh_token", nil, withToken(tok)), 401)
}

func TestPostAlertsProfilesAndShapes(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("agent")
	now := e.now()
	r := e.expect(e.do("POST", "/v1/alerts", []any{agentAlert("1.2.3.4", now), agentAlert("1.2.3.5", now)}, withToken(tok)), 201)
	if r.body != `["1","2"]` {
		t.Fatalf("ids %q", r.body)
	}
	// default profile: 4h ban, until = stop_at + 4h
	r = e.expect(e.do("GET", "/v1/alerts/1", nil, withToken(tok)), 200)
	var a struct {
		MachineID string `json:"machine_id"`
		Decisions []struct {
			Duration, Origin, Scope, Type, Value, Scenario string
			Simulated                                      *bool
		}
		Events []struct{ Timestamp string }
		Labels []string
	}
	r.json(t, &a)
	if a.MachineID != "agent" || len(a.Decisions) != 1 {
		t.Fatalf("alert %s", r.body)
	}
	d := a.Decisions[0]
	if d.Duration != "4h0m0s" || d.Origin != "crowdsec" || d.Scope != "Ip" || d.Type != "ban" || d.Value != "1.2.3.4" || d.Scenario != "crowdsecurity/ssh-bf" || d.Simulated == nil {
		t.Fatalf("decision %+v", d)
	}
	if !strings.Contains(r.body, `"labels":null`) || !strings.Contains(a.Events[0].Timestamp, " +0000 UTC") {
		t.Fatalf("alert shape %s", r.body)
	}
	if m := e.fsm.Machine("agent"); m.LastPush == 0 {
		t.Fatal("last_push not set")
	}
	// schema errors are 500 with index-prefixed paths, nothing stored
	bad := agentAlert("1.2.3.6", now)
	delete(bad, "scenario")
	r = e.expect(e.do("POST", "/v1/alerts", []any{agentAlert("1.2.3.7", now), bad}, withToken(tok)), 500)
	if !strings.Contains(r.body, "1.scenario in body is required") {
		t.Fatalf("schema body %q", r.body)
	}
	e.expect(e.do("POST", "/v1/alerts", `[{"scenario": tru}]`, withToken(tok)), 400)
	// invalid duration: 500, nothing stored
	m := manualAlert("Ip", "9.9.9.9", "ban", "zz", now)
	r = e.expect(e.do("POST", "/v1/alerts", []any{m}, withToken(tok)), 500)
	if !strings.Contains(r.body, "decision duration 'zz'") {
		t.Fatalf("bad duration body %q", r.body)
	}
	// a decision with an unparsable IP is discarded, and so is its alert
	e.expect(e.do("POST", "/v1/alerts", []any{manualAlert("Ip", "not-an-ip", "ban", "1h", now)}, withToken(tok)), 201)
	if r := e.do("GET", "/v1/alerts?limit=0", nil, withToken(tok)); strings.Count(r.body, `"scenario_hash"`) != 2 {
		t.Fatalf("expected exactly 2 stored alerts: %s", r.body)
	}
	// gzip body
	e.expect(e.do("POST", "/v1/alerts", []any{agentAlert("5.5.5.5", now)}, withToken(tok), gzipped()), 201)
	e.expect(e.do("POST", "/v1/alerts", "x", withToken(tok), withHeader("Content-Encoding", "br")), 415)
	e.expect(e.do("POST", "/v1/alerts", "not gzip", withToken(tok), withHeader("Content-Encoding", "gzip")), 400)
}

func TestAlertsQueryAndDelete(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	now := e.now()
	e.expect(e.do("POST", "/v1/alerts", []any{
		manualAlert("Ip", "1.2.3.4", "ban", "1h", now),
		manualAlert("Range", "10.0.0.0/24", "captcha", "2h", now),
		agentAlert("7.7.7.7", now),
	}, withToken(tok)), 201)
	count := func(q string) int {
		r := e.expect(e.do("GET", "/v1/alerts"+q, nil, withToken(tok)), 200)
		return strings.Count(r.body, `"scenario_hash"`)
	}
	cases := map[string]int{
		"":                                  3,
		"?ip=10.0.0.5":                      1,
		"?range=10.0.0.0/16":                0,
		"?range=10.0.0.0/16&contains=false": 1,
		"?decision_type=captcha":            1,
		"?has_active_decision=true":         3,
		"?scope=ip":                         2,
		"?value=1.2.3.4":                    1,
		"?limit=1":                          1,
		"?scenario=manual":                  2,
	}
	for q, want := range cases {
		if got := count(q); got != want {
			t.Errorf("GET /v1/alerts%s: %d alerts, want %d", q, got, want)
		}
	}
	if r := e.expect(e.do("GET", "/v1/alerts?ip=1.1.1.1", nil, withToken(tok)), 200); r.body != "null" {
		t.Fatalf("empty list %q", r.body)
	}
	r := e.expect(e.do("GET", "/v1/alerts?foo=bar", nil, withToken(tok)), 500)
	if !strings.Contains(r.body, "filter parameter 'foo' is unknown (=bar): invalid filter") {
		t.Fatalf("unknown filter %q", r.body)
	}
	e.expect(e.do("GET", "/v1/alerts?ip=nope", nil, withToken(tok)), 500)
	e.expect(e.do("GET", "/v1/alerts?has_active_decision=maybe", nil, withToken(tok)), 500)
	e.expect(e.do("GET", "/v1/alerts/abc", nil, withToken(tok)), 400)
	e.expect(e.do("GET", "/v1/alerts/999", nil, withToken(tok)), 404)
	if r := e.expect(e.do("HEAD", "/v1/alerts", nil, withToken(tok)), 200); r.body != "" {
		t.Fatal("HEAD body")
	}
	// delete: trusted IPs only
	r = e.expect(e.do("DELETE", "/v1/alerts", nil, withToken(tok), fromIP("10.9.9.9")), 403)
	if !strings.Contains(r.body, "access forbidden from this IP (10.9.9.9)") {
		t.Fatalf("untrusted body %q", r.body)
	}
	e.expect(e.do("DELETE", "/v1/alerts/abc", nil, withToken(tok)), 400)
	e.expect(e.do("DELETE", "/v1/alerts/999", nil, withToken(tok)), 500)
	r = e.expect(e.do("DELETE", "/v1/alerts/1", nil, withToken(tok)), 200)
	if r.body != `{"nbDeleted":"1"}` {
		t.Fatalf("delete one %q", r.body)
	}
	r = e.expect(e.do("DELETE", "/v1/alerts?limit=0", nil, withToken(tok)), 200)
	if r.body != `{"nbDeleted":"2"}` {
		t.Fatalf("delete all %q", r.body)
	}
}

func TestBouncerDecisionsAndStream(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	now := e.now()
	e.expect(e.do("POST", "/v1/alerts", []any{
		manualAlert("Ip", "1.2.3.4", "ban", "1h", now),
		manualAlert("Range", "10.0.0.0/24", "ban", "2h", now),
		manualAlert("Username", "bob", "ban", "1h", now),
	}, withToken(tok)), 201)

	r := e.expect(e.do("GET", "/v1/decisions", nil), 403)
	if r.body != `{"message":"access forbidden"}` {
		t.Fatalf("403 body %q", r.body)
	}
	e.expect(e.do("GET", "/v1/decisions", nil, withKey("wrong")), 403)
	r = e.expect(e.do("GET", "/v1/decisions?ip=10.0.0.7", nil, withKey("key1")), 200)
	if !strings.Contains(r.body, `"value":"10.0.0.0/24"`) || strings.Contains(r.body, "uuid") {
		t.Fatalf("range lookup %q", r.body)
	}
	if r := e.expect(e.do("GET", "/v1/decisions?ip=8.8.8.8", nil, withKey("key1")), 200); r.body != "null" {
		t.Fatalf("empty %q", r.body)
	}
	r = e.expect(e.do("GET", "/v1/decisions?ip=bad", nil, withKey("key1")), 500)
	if !strings.Contains(r.body, "unable to convert 'bad' to int") {
		t.Fatalf("bad ip %q", r.body)
	}
	if r := e.do("GET", "/v1/decisions?scope=Username", nil, withKey("key1")); !strings.Contains(r.body, `"value":"bob"`) {
		t.Fatalf("scope filter %q", r.body)
	}
	b := e.fsm.Bouncer("fw")
	if b.IP != "127.0.0.1" || b.Type != "crowdsec" || b.Version != "v1.7.6-test-linux" {
		t.Fatalf("first contact not recorded: %+v", b)
	}

	// stream: startup, then delta
	q := "/v1/decisions/stream?additional_pull=false&community_pull=false"
	r = e.expect(e.do("GET", q+"&startup=true", nil, withKey("key1")), 200)
	if strings.Count(r.body, `"uuid"`) != 2 || strings.Contains(r.body, "bob") || !strings.HasPrefix(r.body, `{"deleted":null,"new":[`) {
		t.Fatalf("startup %q", r.body)
	}
	if r := e.expect(e.do("GET", q, nil, withKey("key1")), 200); r.body != `{"deleted":null,"new":null}` {
		t.Fatalf("empty delta %q", r.body)
	}
	e.advance(time.Second)
	e.expect(e.do("POST", "/v1/alerts", []any{manualAlert("Ip", "4.4.4.4", "ban", "1h", e.now())}, withToken(tok)), 201)
	r = e.expect(e.do("GET", q, nil, withKey("key1")), 200)
	if !strings.Contains(r.body, `"new":[{"duration":"1h0m0s"`) || !strings.Contains(r.body, "4.4.4.4") || strings.Contains(r.body, "1.2.3.4") {
		t.Fatalf("delta new %q", r.body)
	}
	r = e.expect(e.do("DELETE", "/v1/decisions?ip=1.2.3.4", nil, withToken(tok)), 200)
	if r.body != `{"nbDeleted":"1"}` {
		t.Fatalf("delete %q", r.body)
	}
	r = e.expect(e.do("GET", q, nil, withKey("key1")), 200)
	if !strings.Contains(r.body, `"deleted":[{"duration":"0s"`) || !strings.Contains(r.body, "1.2.3.4") || !strings.HasSuffix(r.body, `"new":null}`) {
		t.Fatalf("delta deleted %q", r.body)
	}
	// natural expiry shows up as deleted
	e.advance(2 * time.Hour)
	r = e.expect(e.do("GET", q, nil, withKey("key1")), 200)
	if !strings.Contains(r.body, "4.4.4.4") || !strings.Contains(r.body, "10.0.0.0/24") {
		t.Fatalf("expiry delta %q", r.body)
	}
	if r := e.expect(e.do("HEAD", q, nil, withKey("key1")), 200); r.body != "" {
		t.Fatal("HEAD stream body")
	}
	e.expect(e.do("HEAD", q, nil, withKey("nope")), 403)
}

func TestDeleteDecisionsFilters(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	now := e.now()
	e.expect(e.do("POST", "/v1/alerts", []any{
		manualAlert("Ip", "1.2.3.4", "ban", "1h", now),
		manualAlert("Range", "1.2.3.0/24", "ban", "1h", now),
		manualAlert("Ip", "5.5.5.5", "captcha", "1h", now),
	}, withToken(tok)), 201)
	r := e.expect(e.do("DELETE", "/v1/decisions?bogus=1", nil, withToken(tok)), 500)
	if !strings.Contains(r.body, "'bogus' doesn't exist: invalid filter") {
		t.Fatalf("bogus %q", r.body)
	}
	// scopes is exact: "ip" matches nothing
	if r := e.do("DELETE", "/v1/decisions?scopes=ip", nil, withToken(tok)); r.body != `{"nbDeleted":"0"}` {
		t.Fatalf("scopes exact %q", r.body)
	}
	// contains=true by default: -i 1.2.3.4 also expires the /24
	if r := e.do("DELETE", "/v1/decisions?ip=1.2.3.4", nil, withToken(tok)); r.body != `{"nbDeleted":"2"}` {
		t.Fatalf("ip delete %q", r.body)
	}
	e.expect(e.do("DELETE", "/v1/decisions/x", nil, withToken(tok)), 400)
	r = e.expect(e.do("DELETE", "/v1/decisions/99", nil, withToken(tok)), 500)
	if !strings.Contains(r.body, "decision with id '99' doesn't exist") {
		t.Fatalf("unknown id %q", r.body)
	}
	e.expect(e.do("DELETE", "/v1/decisions/3", nil, withToken(tok)), 200)
	if r := e.do("GET", "/v1/alerts?has_active_decision=true", nil, withToken(tok)); r.body != "null" {
		t.Fatalf("all decisions should be expired: %s", r.body)
	}
}

func TestSharedKeyCreatesOneRowPerIP(t *testing.T) {
	e := newEnv(t)
	e.bouncer("nginx", "shared")
	e.expect(e.do("GET", "/v1/decisions", nil, withKey("shared"), fromIP("10.0.0.1")), 200)
	e.expect(e.do("GET", "/v1/decisions", nil, withKey("shared"), fromIP("10.0.0.2")), 200)
	e.expect(e.do("GET", "/v1/decisions", nil, withKey("shared"), fromIP("10.0.0.2")), 200)
	if b := e.fsm.Bouncer("nginx"); b == nil || b.IP != "10.0.0.1" {
		t.Fatalf("parent %+v", b)
	}
	if b := e.fsm.Bouncer("nginx@10.0.0.2"); b == nil || !b.AutoCreated {
		t.Fatalf("child %+v", b)
	}
	if n := len(e.fsm.Bouncers()); n != 2 {
		t.Fatalf("%d bouncer rows, want 2", n)
	}
}

func TestAllowlistsRoutes(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m")
	if r := e.expect(e.do("GET", "/v1/allowlists", nil, withToken(tok)), 200); r.body != "[]" {
		t.Fatalf("empty list %q", r.body)
	}
	admin := adminAPI(e.srv)
	call := func(method, path, body string) int {
		w := newRecorder()
		admin.ServeHTTP(w, mustReq(method, path, body))
		return w.Code
	}
	if c := call("POST", "/admin/v1/allowlists", `{"name":"office","description":"d"}`); c != 201 {
		t.Fatalf("create %d", c)
	}
	// an active ban inside the range is expired when the range is allowlisted
	e.expect(e.do("POST", "/v1/alerts", []any{manualAlert("Ip", "192.168.1.7", "ban", "1h", e.now())}, withToken(tok)), 201)
	if c := call("POST", "/admin/v1/allowlists/office/items", `{"values":["192.168.1.0/24"],"comment":"lan"}`); c != 200 {
		t.Fatalf("add %d", c)
	}
	if r := e.do("GET", "/v1/alerts?has_active_decision=true", nil, withToken(tok)); r.body != "null" {
		t.Fatalf("ban should be expired: %s", r.body)
	}
	r := e.expect(e.do("GET", "/v1/allowlists/check/192.168.1.7", nil, withToken(tok)), 200)
	if r.body != `{"allowlisted":true,"reason":"192.168.1.0/24 from office (lan)"}` {
		t.Fatalf("check %q", r.body)
	}
	if r := e.expect(e.do("GET", "/v1/allowlists/check/10.0.0.0%2F8", nil, withToken(tok)), 200); r.body != "{}" {
		t.Fatalf("check miss %q", r.body)
	}
	e.expect(e.do("HEAD", "/v1/allowlists/check/8.8.8.8", nil, withToken(tok)), 204)
	e.expect(e.do("HEAD", "/v1/allowlists/check/192.168.1.1", nil, withToken(tok)), 200)
	e.expect(e.do("GET", "/v1/allowlists/check/nope", nil, withToken(tok)), 500)
	r = e.expect(e.do("POST", "/v1/allowlists/check", `{"targets":["192.168.0.0/16","1.1.1.1"]}`, withToken(tok)), 200)
	if r.body != `{"results":[{"target":"192.168.0.0/16","allowlists":["192.168.1.0/24 from office (lan)"]}]}` {
		t.Fatalf("bulk %q", r.body)
	}
	e.expect(e.do("POST", "/v1/allowlists/check", `{"targets":[]}`, withToken(tok)), 400)
	r = e.expect(e.do("GET", "/v1/allowlists/office?with_content=true", nil, withToken(tok)), 200)
	if !strings.Contains(r.body, `"value":"192.168.1.0/24"`) || !strings.Contains(r.body, `"expiration":"0001-01-01T00:00:00.000Z"`) {
		t.Fatalf("get %q", r.body)
	}
	e.expect(e.do("GET", "/v1/allowlists/nope", nil, withToken(tok)), 500)
	// an agent alert on an allowlisted IP is dropped silently
	r = e.expect(e.do("POST", "/v1/alerts", []any{agentAlert("192.168.1.9", e.now())}, withToken(tok)), 201)
	if r.body != "[]" {
		t.Fatalf("allowlisted alert stored: %q", r.body)
	}
}

func TestUsageMetrics(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m")
	e.bouncer("fw", "k")
	lp := `{"log_processors":[{"version":"v1.7.6","os":{"name":"debian","version":"12"},"utc_startup_timestamp":1,"hub_items":{},"datasources":{"file":1},"metrics":[]}]}`
	e.expect(e.do("POST", "/v1/usage-metrics", lp, withToken(tok)), 201)
	if m := e.fsm.Machine("m"); m.OSName != "debian" || string(m.Datasources) != `{"file":1}` {
		t.Fatalf("machine metrics not stored: %+v", m)
	}
	r := e.expect(e.do("POST", "/v1/usage-metrics", `{"log_processors":[{"version":"x","utc_startup_timestamp":1,"hub_items":{}}]}`, withToken(tok)), 422)
	if !strings.Contains(r.body, "log_processors.0.datasources in body is required") {
		t.Fatalf("422 %q", r.body)
	}
	e.expect(e.do("POST", "/v1/usage-metrics", `{"log_processors":[]}`, withToken(tok)), 400)
	rc := `{"remediation_components":[{"version":"v0.0.21","type":"fw","utc_startup_timestamp":1,"os":{"name":"linux","version":"6"}}]}`
	e.expect(e.do("POST", "/v1/usage-metrics", rc, withKey("k"), withUA("crowdsec-firewall-bouncer/v0.0.1")), 201)
	e.expect(e.do("POST", "/v1/usage-metrics", `{}`, withKey("k"), withUA("crowdsec-firewall-bouncer/v0.0.1")), 400)
	// no key, no bearer, non-crowdsec UA → bouncer auth → 403
	e.expect(e.do("POST", "/v1/usage-metrics", rc, withUA("fw/1")), 403)
}

func TestRetentionFlush(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.FlushMaxItems = 2 })
	tok := e.machine("m")
	for i := 0; i < 5; i++ {
		e.expect(e.do("POST", "/v1/alerts", []any{agentAlert(fmt.Sprintf("1.1.1.%d", i), e.now())}, withToken(tok)), 201)
	}
	if err := e.srv.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	r := e.expect(e.do("GET", "/v1/alerts?limit=0&sort=ASC", nil, withToken(tok)), 200)
	if n := strings.Count(r.body, `"scenario_hash"`); n != 3 || !strings.Contains(r.body, `"id":3`) {
		t.Fatalf("after flush (max 2 → ids >= 3 kept): %d alerts: %s", n, r.body)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	tok := e.machine("m")
	big := "[" + strings.Repeat(" ", 2048) + "]"
	e.expect(e.do("POST", "/v1/alerts", big, withToken(tok)), 400)
	_ = http.StatusOK
}

func TestHeadOnlyWhereCrowdSecHasIt(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m")
	e.expect(e.do("HEAD", "/v1/allowlists/x", nil, withToken(tok)), 405)
	e.expect(e.do("HEAD", "/v1/allowlists", nil, withToken(tok)), 405)
	e.expect(e.do("HEAD", "/v1/alerts/1", nil, withToken(tok)), 404)
}

func TestUAIsAgreesWithSplitUA(t *testing.T) {
	for _, ua := range []string{"crowdsec-firewall-bouncer/v0.0.31", "curl/7.88.1", "noslash", "a/b/c", "/x", "x/", "", "crowdsec/"} {
		typ, ver := splitUA(ua)
		if !uaIs(ua, typ, ver) {
			t.Errorf("uaIs(%q, %q, %q) = false", ua, typ, ver)
		}
		if uaIs(ua, typ+"z", ver) || uaIs(ua, typ, ver+"z") {
			t.Errorf("uaIs(%q) matched a different type or version", ua)
		}
	}
}
