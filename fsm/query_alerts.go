package fsm

// Read side: alerts and their filter.

import (
	"strings"
	"time"
)

// AlertFilter selects alerts (GET and DELETE /v1/alerts).
type AlertFilter struct {
	Scope, Value, Scenario string
	IP                     *IPRange
	Contains               bool
	Since, Until           int64 // started_at bounds (unix ns), 0 = none
	CreatedBefore          int64
	DecisionType, Origin   string
	ExcludeCAPI            bool
	HasActiveDecision      *bool
	ExcludeSimulated       bool
	Limit                  int // 0 = all
	Asc                    bool
}

func (s *state) alertMatch(f *AlertFilter, a *Alert, now int64) bool {
	if f.Scope != "" && a.Source.Scope != f.Scope {
		return false
	}
	if f.Value != "" && a.Source.Value != f.Value {
		return false
	}
	if f.Since != 0 && a.StartAt < f.Since {
		return false
	}
	if f.Until != 0 && a.StartAt > f.Until {
		return false
	}
	if f.CreatedBefore != 0 && a.CreatedAt > f.CreatedBefore {
		return false
	}
	if f.ExcludeSimulated && a.Simulated {
		return false
	}
	needDecisions := f.Scenario != "" || f.IP != nil || f.DecisionType != "" || f.Origin != "" || f.ExcludeCAPI || f.HasActiveDecision != nil
	if !needDecisions {
		return true
	}
	ds := make([]*Decision, 0, len(a.DecisionIDs))
	for _, id := range a.DecisionIDs {
		if d := s.decision(id); d != nil {
			ds = append(ds, d)
		}
	}
	has := func(p func(*Decision) bool) bool {
		for _, d := range ds {
			if p(d) {
				return true
			}
		}
		return false
	}
	if f.Scenario != "" && a.Scenario != f.Scenario && !has(func(d *Decision) bool { return d.Scenario == f.Scenario }) {
		return false
	}
	if f.DecisionType != "" && !has(func(d *Decision) bool { return d.Type == f.DecisionType }) {
		return false
	}
	if f.Origin != "" && !has(func(d *Decision) bool { return d.Origin == f.Origin }) {
		return false
	}
	if f.ExcludeCAPI {
		if has(func(d *Decision) bool { return d.Origin == "CAPI" || d.Origin == "lists" }) {
			return false
		}
		if len(ds) == 0 && (strings.HasPrefix(a.Source.Scope, "lists:") || a.Source.Scope == "crowdsecurity/community-blocklist") {
			return false
		}
	}
	if f.HasActiveDecision != nil {
		if *f.HasActiveDecision {
			if !has(func(d *Decision) bool { return d.Until > now }) {
				return false
			}
		} else if len(ds) > 0 {
			return false
		}
	}
	if f.IP != nil {
		q := *f.IP
		if f.Contains {
			return has(func(d *Decision) bool { return d.Range.Contains(q) })
		}
		return has(func(d *Decision) bool { return q.Contains(d.Range.Range()) })
	}
	return true
}

// Alerts returns the alerts matching f, newest first unless f.Asc.
func (f *FSM) Alerts(flt *AlertFilter, now time.Time) []*Alert {
	s := f.read()
	return s.matchAlerts(flt, now.UnixNano())
}

func (s *state) matchAlerts(flt *AlertFilter, now int64) []*Alert {
	var out []*Alert
	visit := func(a *Alert) bool {
		if s.alertMatch(flt, a, now) {
			out = append(out, a)
		}
		return flt.Limit <= 0 || len(out) < flt.Limit
	}
	if flt.Asc {
		s.alerts.Ascend(visit)
	} else {
		s.alerts.Descend(visit)
	}
	return out
}

// Alert returns one alert by ID, or nil.
func (f *FSM) Alert(id int64) *Alert {
	s := f.read()
	return s.alert(id)
}

// AlertDecisions returns the stored decisions of an alert, ID order.
func (f *FSM) AlertDecisions(a *Alert) []*Decision {
	s := f.read()
	out := make([]*Decision, 0, len(a.DecisionIDs))
	for _, id := range a.DecisionIDs {
		if d := s.decision(id); d != nil {
			out = append(out, d)
		}
	}
	return out
}

// AlertsAfter returns up to limit alerts with an ID above after, in ID
// order (the CAPI signal push walks alerts this way).
func (f *FSM) AlertsAfter(after int64, limit int) []*Alert {
	s := f.read()
	var out []*Alert
	s.alerts.AscendGreaterOrEqual(&Alert{ID: after + 1}, func(a *Alert) bool {
		out = append(out, a)
		return limit <= 0 || len(out) < limit
	})
	return out
}

// LastAlertID returns the highest stored alert ID (0 when none).
func (f *FSM) LastAlertID() int64 {
	s := f.read()
	if a, ok := s.alerts.Max(); ok {
		return a.ID
	}
	return 0
}
