package profiles

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/lapi/models"
)

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeDecision is one stored decision of fakeStore.
type fakeDecision struct {
	prefix  netip.Prefix
	created time.Time
	until   time.Time
}

// fakeStore implements Store over a slice, with the containment semantics of
// the contract (the decision interval contains the queried IP or range).
type fakeStore struct {
	decisions []fakeDecision
	calls     []string
}

func toPrefix(v string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

func (s *fakeStore) add(value string, created time.Time, d time.Duration) {
	p, ok := toPrefix(value)
	if !ok {
		panic("bad test value " + value)
	}
	s.decisions = append(s.decisions, fakeDecision{prefix: p, created: created, until: created.Add(d)})
}

func (s *fakeStore) covering(value string) []fakeDecision {
	q, ok := toPrefix(value)
	if !ok {
		return nil
	}
	var out []fakeDecision
	for _, d := range s.decisions {
		if d.prefix.Addr().Is4() == q.Addr().Is4() && d.prefix.Bits() <= q.Bits() && d.prefix.Contains(q.Addr()) {
			out = append(out, d)
		}
	}
	return out
}

func (s *fakeStore) CountDecisions(value string, since time.Time, activeOnly bool, now time.Time) int {
	s.calls = append(s.calls, "count:"+value)
	n := 0
	for _, d := range s.covering(value) {
		if !since.IsZero() && !d.created.After(since) {
			continue
		}
		if activeOnly && !d.until.After(now) {
			continue
		}
		n++
	}
	return n
}

func (s *fakeStore) ActiveTimeLeft(value string, now time.Time) time.Duration {
	s.calls = append(s.calls, "left:"+value)
	var best time.Time
	for _, d := range s.covering(value) {
		if d.until.After(now) && d.until.After(best) {
			best = d.until
		}
	}
	if best.IsZero() {
		return 0
	}
	return best.Sub(now)
}

// agentAlert builds a validated-looking agent alert (no decisions).
func agentAlert(scope, value, scenario string, remediation bool) *models.Alert {
	return &models.Alert{
		Capacity:        models.Int32(5),
		Events:          []*models.Event{},
		EventsCount:     models.Int32(6),
		Leakspeed:       models.Str("10s"),
		MachineID:       "machine1",
		Message:         models.Str("test"),
		Remediation:     remediation,
		Scenario:        models.Str(scenario),
		ScenarioHash:    models.Str("hash"),
		ScenarioVersion: models.Str("0.1"),
		Simulated:       models.Bool(false),
		Source:          &models.Source{Scope: models.Str(scope), Value: models.Str(value)},
		StartAt:         models.Str(t0.Format(time.RFC3339)),
		StopAt:          models.Str(t0.Format(time.RFC3339)),
		UUID:            "alert-uuid",
	}
}

func mustParse(t *testing.T, y string) []*Profile {
	t.Helper()
	ps, err := Parse([]byte(y))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return ps
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// decisionSummary renders a decision as "type scope value duration origin scenario[ sim]".
func decisionSummary(d *models.Decision) string {
	s := strings.Join([]string{deref(d.Type), deref(d.Scope), deref(d.Value), deref(d.Duration), deref(d.Origin), deref(d.Scenario)}, " ")
	if d.Simulated != nil && *d.Simulated {
		s += " sim"
	}
	return s
}

func summaries(ds []*models.Decision) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = decisionSummary(d)
	}
	return out
}

func assertDecisions(t *testing.T, got []*models.Decision, want ...string) {
	t.Helper()
	g := summaries(got)
	if len(g) != len(want) {
		t.Fatalf("decisions = %q, want %q", g, want)
	}
	for i := range g {
		if g[i] != want[i] {
			t.Fatalf("decisions = %q, want %q", g, want)
		}
	}
}

func matchNames(ms []Match) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Profile.Name
	}
	return out
}
