package lapi

import (
	"fmt"
	"sort"
	"strings"
	"testing"
)

// series returns every sample of a metric family as "label=value,..." ->
// value (counters, gauges; histograms report their sample count).
func (e *env) series(name string) map[string]float64 {
	e.t.Helper()
	mfs, err := e.srv.metrics.Registry.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			out[strings.Join(ls, ",")] = v
		}
	}
	return out
}

// CrowdSec's LAPI series, with its labels and values, as a dashboard
// written for CrowdSec reads them.
func TestPrometheusCrowdSecSeries(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("agent1")
	e.bouncer("fw1", "key1")
	now := e.now()
	// one agent alert with a ban, one cscli captcha
	a := agentAlert("1.2.3.4", now)
	a["decisions"] = []any{map[string]any{"duration": "4h", "origin": "crowdsec", "scenario": "crowdsecurity/ssh-bf",
		"scope": "Ip", "type": "ban", "value": "1.2.3.4"}}
	e.expect(e.do("POST", "/v1/alerts", []any{a, manualAlert("Ip", "5.6.7.8", "captcha", "1h", now)}, withToken(tok)), 201)

	e.expect(e.do("GET", "/v1/decisions?ip=1.2.3.4", nil, withKey("key1")), 200)
	e.expect(e.do("GET", "/v1/decisions?ip=9.9.9.9", nil, withKey("key1")), 200)
	e.expect(e.do("GET", "/v1/decisions?ip=9.9.9.8", nil, withKey("key1")), 200)
	e.expect(e.do("GET", "/v1/decisions/stream?startup=true", nil, withKey("key1")), 200)
	e.expect(e.do("GET", "/v1/alerts/1", nil, withToken(tok)), 200)

	want := map[string]map[string]float64{
		"cs_lapi_decisions_ok_total": {"bouncer=fw1": 1},
		"cs_lapi_decisions_ko_total": {"bouncer=fw1": 2},
		"cs_active_decisions": {
			"action=ban,origin=crowdsec,reason=crowdsecurity/ssh-bf": 1,
			"action=captcha,origin=cscli,reason=manual":              1,
		},
		"cs_alerts": {"reason=crowdsecurity/ssh-bf": 1, "reason=manual": 1},
	}
	for name, w := range want {
		if got := e.series(name); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	// route labels are gin's templates, as CrowdSec reports them
	if got := e.series("cs_lapi_machine_requests_total"); got["machine=agent1,method=GET,route=/v1/alerts/:alert_id"] != 1 {
		t.Errorf("cs_lapi_machine_requests_total = %v, want route /v1/alerts/:alert_id", got)
	}
	if got := e.series("cs_lapi_route_requests_total"); got["method=GET,route=/v1/alerts/:alert_id"] != 1 ||
		got["method=GET,route=/v1/decisions"] != 3 {
		t.Errorf("cs_lapi_route_requests_total = %v", got)
	}
	if got := e.series("cs_lapi_bouncer_requests_total"); got["bouncer=fw1,method=GET,route=/v1/decisions/stream"] != 1 ||
		got["bouncer=fw1,method=GET,route=/v1/decisions"] != 3 {
		t.Errorf("cs_lapi_bouncer_requests_total = %v", got)
	}
	if got := e.series("cs_lapi_request_duration_seconds"); got["endpoint=/v1/decisions,method=GET"] != 3 {
		t.Errorf("cs_lapi_request_duration_seconds = %v", got)
	}
}

// Labels an unauthenticated client chooses (path, method) are bounded:
// unknown paths count under "invalid-endpoint", unknown methods under
// "OTHER".
func TestPrometheusLabelsFromAnonymousInputBounded(t *testing.T) {
	e := newEnv(t)
	for i := range 50 {
		e.expect(e.do("GET", fmt.Sprintf("/v1/nope-%d", i), nil), 404)
		e.expect(e.do("GET", fmt.Sprintf("/x/%d", i), nil), 404)
		e.do(fmt.Sprintf("M%d", i), "/v1/watchers/login", nil)
		e.do(fmt.Sprintf("M%d", i), fmt.Sprintf("/v1/nope-%d", i), nil)
	}
	got := e.series("cs_lapi_route_requests_total")
	if len(got) != 3 || got["method=GET,route=invalid-endpoint"] != 100 || got["method=OTHER,route=invalid-endpoint"] != 50 ||
		got["method=OTHER,route=/v1/watchers/login"] != 50 {
		t.Errorf("cs_lapi_route_requests_total = %v", got)
	}
	if n := len(e.series("cs_lapi_request_duration_seconds")); n != 1 {
		t.Errorf("cs_lapi_request_duration_seconds has %d series, want 1", n)
	}
}

// Past maxLabelSets groups, the smallest are summed under "other": the
// series count is bounded, the total is kept.
func TestPrometheusActiveDecisionGroupsBounded(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("agent1")
	now := e.now()
	n := maxLabelSets + 20
	var alerts []any
	for i := range n {
		ip := fmt.Sprintf("10.0.%d.%d", i/250, i%250+1)
		a := agentAlert(ip, now)
		a["scenario"] = fmt.Sprintf("test/s%d", i)
		a["decisions"] = []any{map[string]any{"duration": "1h", "origin": "crowdsec", "scenario": a["scenario"],
			"scope": "Ip", "type": "ban", "value": ip}}
		alerts = append(alerts, a)
		if len(alerts) == 100 || i == n-1 {
			e.expect(e.do("POST", "/v1/alerts", alerts, withToken(tok)), 201)
			alerts = nil
		}
	}
	for _, name := range []string{"cs_active_decisions", "cs_alerts"} {
		got := e.series(name)
		sum := 0.0
		for _, v := range got {
			sum += v
		}
		if len(got) != maxLabelSets || sum != float64(n) {
			t.Errorf("%s: %d series summing to %v, want %d summing to %d", name, len(got), sum, maxLabelSets, n)
		}
	}
	if got := e.series("cs_active_decisions"); got["action=other,origin=other,reason=other"] != 21 {
		t.Errorf("other group = %v, want 21", got["action=other,origin=other,reason=other"])
	}
}
