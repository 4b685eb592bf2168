package fsm

import (
	"fmt"
	"reflect"
	"testing"
)

func TestMetricCountsGroupsActiveDecisionsAndExcludesCommunityAlerts(t *testing.T) {
	h := newHarness(t)
	ts := T0
	// two agent alerts on ssh-bf, one on http-probing (ban and captcha)
	h.alert(ts, "m1", Alert{Scenario: "crowdsecurity/ssh-bf"},
		withScenario(withOrigin(ban("1.2.3.4", ts+hour), "crowdsec"), "crowdsecurity/ssh-bf"))
	h.alert(ts, "m1", Alert{Scenario: "crowdsecurity/ssh-bf"},
		withScenario(withOrigin(ban("1.2.3.5", ts+hour), "crowdsec"), "crowdsecurity/ssh-bf"))
	h.alert(ts, "m2", Alert{Scenario: "crowdsecurity/http-probing"},
		withType(withScenario(withOrigin(ban("1.2.3.6", ts+hour), "crowdsec"), "crowdsecurity/http-probing"), "captcha"))
	// an expired decision: counted in Total, not in ActiveBy
	h.alert(ts, "m2", Alert{Scenario: "crowdsecurity/http-probing"},
		withScenario(withOrigin(ban("1.2.3.7", ts+sec), "crowdsec"), "crowdsecurity/http-probing"))
	// a community blocklist alert: its decisions count, the alert does not
	h.alert(ts, "", Alert{Scenario: "update : +2/-0 IPs", Source: Source{Scope: "crowdsecurity/community-blocklist"}},
		withScenario(withOrigin(ban("5.5.5.5", ts+hour), "CAPI"), "crowdsecurity/ssh-bf"),
		withScenario(withOrigin(ban("5.5.5.6", ts+hour), "CAPI"), "crowdsecurity/ssh-bf"))
	// an empty blocklist pull alert is excluded too
	h.alert(ts, "", Alert{Scenario: "update : +0/-0 IPs", Source: Source{Scope: "lists:firehol"}})

	got := h.f.MetricCounts(at(ts + mins))
	if got.Alerts != 6 || got.Total != 6 || got.Active != 5 {
		t.Fatalf("totals: alerts %d total %d active %d, want 6 6 5", got.Alerts, got.Total, got.Active)
	}
	wantActive := map[DecisionGroup]int{
		{"crowdsecurity/ssh-bf", "crowdsec", "ban"}:           2,
		{"crowdsecurity/http-probing", "crowdsec", "captcha"}: 1,
		{"crowdsecurity/ssh-bf", "CAPI", "ban"}:               2,
	}
	if !reflect.DeepEqual(got.ActiveBy, wantActive) {
		t.Errorf("ActiveBy = %v, want %v", got.ActiveBy, wantActive)
	}
	wantAlerts := map[string]int{"crowdsecurity/ssh-bf": 2, "crowdsecurity/http-probing": 2}
	if !reflect.DeepEqual(got.AlertsBy, wantAlerts) {
		t.Errorf("AlertsBy = %v, want %v", got.AlertsBy, wantAlerts)
	}
	// the sum of the groups is the active count Counts reports
	_, act, _ := h.f.Counts(at(ts + mins))
	sum := 0
	for _, n := range got.ActiveBy {
		sum += n
	}
	if sum != act {
		t.Errorf("groups sum to %d, Counts says %d active", sum, act)
	}
}

// BenchmarkMetricCounts: one scrape of a state holding a community
// blocklist (one alert, n CAPI decisions) and 1000 agent alerts.
func BenchmarkMetricCounts(b *testing.B) {
	h := newBenchHarness(b)
	const n = 200000
	ds := make([]Decision, n)
	for i := range ds {
		ds[i] = withScenario(withOrigin(ban(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), T0+hour), "CAPI"),
			fmt.Sprintf("crowdsecurity/s%d", i%40))
	}
	h.must(CmdImportDecisions, T0, ImportDecisions{Alert: Alert{Scenario: "update", Source: Source{Scope: "crowdsecurity/community-blocklist"}},
		Decisions: ds})
	for i := range 1000 {
		h.alert(T0, "m1", Alert{Scenario: "crowdsecurity/ssh-bf"},
			withScenario(withOrigin(ban(fmt.Sprintf("192.168.%d.%d", i/250, i%250), T0+hour), "crowdsec"), "crowdsecurity/ssh-bf"))
	}
	b.ResetTimer()
	for range b.N {
		mc := h.f.MetricCounts(at(T0 + mins))
		if mc.Active != n+1000 || len(mc.AlertsBy) != 1 {
			b.Fatalf("active %d, alerts by %v", mc.Active, mc.AlertsBy)
		}
	}
}

func BenchmarkCountsBaseline(b *testing.B) {
	h := newBenchHarness(b)
	const n = 200000
	ds := make([]Decision, n)
	for i := range ds {
		ds[i] = withOrigin(ban(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), T0+hour), "CAPI")
	}
	h.must(CmdImportDecisions, T0, ImportDecisions{Alert: Alert{Scenario: "update"}, Decisions: ds})
	b.ResetTimer()
	for range b.N {
		h.f.Counts(at(T0 + mins))
	}
}
