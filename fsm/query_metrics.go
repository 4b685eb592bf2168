package fsm

import (
	"runtime"
	"strings"
	"time"
)

// DecisionGroup is one (scenario, origin, type) group of active decisions,
// the labels of CrowdSec's cs_active_decisions gauge.
type DecisionGroup struct{ Scenario, Origin, Type string }

// MetricCounts is what the Prometheus collector reports about the state.
type MetricCounts struct {
	Alerts, Active, Total int
	// ActiveBy counts the active decisions per group.
	ActiveBy map[DecisionGroup]int
	// AlertsBy counts the alerts per scenario, alerts of the Central API
	// and of blocklists excluded (CrowdSec's include_capi=false filter).
	AlertsBy map[string]int
}

// MetricCounts walks the active decisions and the alerts once. Its cost is
// that of Counts plus one pass over the alerts (the first decision of a
// CAPI or blocklist alert already tells it is one).
func (f *FSM) MetricCounts(now time.Time) MetricCounts {
	n := now.UnixNano()
	s := f.read()
	out := MetricCounts{Alerts: s.alertCount, Total: s.decisions.Len(),
		ActiveBy: map[DecisionGroup]int{}, AlertsBy: map[string]int{}}
	// a walk of every decision: yield now and then (see listYieldEvery),
	// a scrape must not hold a one-core node's P for tens of ms
	s.byUntil.DescendGreaterThan(&Decision{Until: n, ID: 1<<63 - 1}, func(d *Decision) bool {
		if out.Active&listYieldEvery == listYieldEvery {
			runtime.Gosched()
		}
		out.Active++
		out.ActiveBy[DecisionGroup{d.Scenario, d.Origin, d.Type}]++
		return true
	})
	seen := 0
	s.alerts.Ascend(func(a *Alert) bool {
		if seen++; seen&listYieldEvery == 0 {
			runtime.Gosched()
		}
		if !s.communityAlert(a) {
			out.AlertsBy[a.Scenario]++
		}
		return true
	})
	return out
}

// communityAlert reports whether an alert carries Central API or blocklist
// decisions, or is an empty alert of a blocklist pull.
func (s *state) communityAlert(a *Alert) bool {
	found := false
	for _, id := range a.DecisionIDs {
		d := s.decision(id)
		if d == nil {
			continue
		}
		if d.Origin == "CAPI" || d.Origin == "lists" {
			return true
		}
		found = true
	}
	return !found && (strings.HasPrefix(a.Source.Scope, "lists:") || a.Source.Scope == "crowdsecurity/community-blocklist")
}
