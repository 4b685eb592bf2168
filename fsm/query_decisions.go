package fsm

import (
	"slices"
	"sort"
	"strings"
	"time"
)

// Read side. Every method reads the last published state (FSM.read): it
// is immutable, so no lock is taken and an apply never makes a reader
// wait. Returned records are immutable too.

// DecisionFilter selects decisions (live query, stream, delete).
type DecisionFilter struct {
	Scopes              []string // stored scope must be one of these (exact)
	Value               string
	Type                string
	Origins             []string
	Scenario            string   // exact (delete)
	ScenariosContaining []string // lower-case words, any
	ScenariosNot        []string // lower-case words, none
	UUIDs               []string
	IP                  *IPRange
	Contains            bool
	IncludeSimulated    bool
	Limit, Offset       int
	IDGt                int64
	NoDedup             bool // stream: keep every decision, not only the longest
}

func (f *DecisionFilter) match(d *Decision) bool {
	if f.IDGt > 0 && d.ID <= f.IDGt {
		return false
	}
	if !f.IncludeSimulated && d.Simulated {
		return false
	}
	if f.Value != "" && d.Value != f.Value {
		return false
	}
	if f.Type != "" && d.Type != f.Type {
		return false
	}
	if f.Scenario != "" && d.Scenario != f.Scenario {
		return false
	}
	if len(f.Scopes) > 0 && !slices.Contains(f.Scopes, d.Scope) {
		return false
	}
	if len(f.Origins) > 0 && !slices.Contains(f.Origins, d.Origin) {
		return false
	}
	if len(f.UUIDs) > 0 && !slices.ContainsFunc(f.UUIDs, func(s string) bool { u, err := ParseUUID(s); return err == nil && u == d.UUID }) {
		return false
	}
	if len(f.ScenariosContaining) > 0 || len(f.ScenariosNot) > 0 {
		sc := strings.ToLower(d.Scenario)
		if len(f.ScenariosContaining) > 0 {
			ok := false
			for _, w := range f.ScenariosContaining {
				if strings.Contains(sc, w) {
					ok = true
					break
				}
			}
			if !ok {
				return false
			}
		}
		for _, w := range f.ScenariosNot {
			if strings.Contains(sc, w) {
				return false
			}
		}
	}
	if f.IP != nil {
		if f.Contains {
			return d.Range.Contains(*f.IP)
		}
		return f.IP.Contains(d.Range.Range())
	}
	return true
}

// candidates returns decisions that may match f, in ID order.
func (s *state) candidates(f *DecisionFilter) []*Decision {
	if f.IP != nil {
		return s.ipCandidates(*f.IP, f.Contains)
	}
	if f.Value != "" {
		var g []*Decision
		s.sameValue(f.Value, parsePrefix(f.Value), func(d *Decision) bool { g = append(g, d); return true })
		sort.Slice(g, func(i, j int) bool { return g[i].ID < g[j].ID })
		return g
	}
	return nil
}

func (s *state) eachCandidate(f *DecisionFilter, fn func(*Decision) bool) {
	if f.IP != nil || f.Value != "" {
		for _, d := range s.candidates(f) {
			if !fn(d) {
				return
			}
		}
		return
	}
	pivot := &Decision{ID: f.IDGt + 1}
	s.decisions.AscendGreaterOrEqual(pivot, fn)
}

// Decisions returns the active decisions matching f (no dedup), ID order.
func (f *FSM) Decisions(flt *DecisionFilter, now time.Time) []*Decision {
	n := now.UnixNano()
	s := f.read()
	var out []*Decision
	skip := flt.Offset
	s.eachCandidate(flt, func(d *Decision) bool {
		if d.Until < n || !flt.match(d) {
			return true
		}
		if skip > 0 {
			skip--
			return true
		}
		out = append(out, d)
		return flt.Limit <= 0 || len(out) < flt.Limit
	})
	return out
}

// MatchActive returns the IDs of active decisions (until > now) matching f
// (DELETE /v1/decisions sets IncludeSimulated).
func (f *FSM) MatchActive(flt *DecisionFilter, now time.Time) []int64 {
	s := f.read()
	return s.matchActive(flt, now.UnixNano())
}

func (s *state) matchActive(flt *DecisionFilter, now int64) []int64 {
	var ids []int64
	s.eachCandidate(flt, func(d *Decision) bool {
		if d.Until > now && flt.match(d) {
			ids = append(ids, d.ID)
		}
		return true
	})
	return ids
}

// Decision returns one decision by ID, or nil.
func (f *FSM) Decision(id int64) *Decision {
	s := f.read()
	return s.decision(id)
}

// CountDecisions counts stored decisions covering value (profiles helper).
func (f *FSM) CountDecisions(value string, since time.Time, activeOnly bool, now time.Time) int {
	r, err := ParseRange(value)
	if err != nil {
		return 0
	}
	n := now.UnixNano()
	var sinceN int64
	if !since.IsZero() {
		sinceN = since.UnixNano()
	}
	s := f.read()
	c := 0
	s.covering(r, func(d *Decision) bool {
		if (sinceN == 0 || d.CreatedAt > sinceN) && (!activeOnly || d.Until > n) {
			c++
		}
		return true
	})
	return c
}

// ActiveTimeLeft returns the remaining time of the active decision covering
// value with the latest until (profiles helper).
func (f *FSM) ActiveTimeLeft(value string, now time.Time) time.Duration {
	r, err := ParseRange(value)
	if err != nil {
		return 0
	}
	n := now.UnixNano()
	s := f.read()
	var best int64
	s.covering(r, func(d *Decision) bool {
		if d.Until > n && d.Until > best {
			best = d.Until
		}
		return true
	})
	if best == 0 {
		return 0
	}
	return time.Duration(best - n)
}

// Counts returns the number of alerts and active/total decisions.
func (f *FSM) Counts(now time.Time) (alerts, active, total int) {
	n := now.UnixNano()
	s := f.read()
	total = s.decisions.Len()
	s.byUntil.DescendGreaterThan(&Decision{Until: n, ID: 1<<63 - 1}, func(*Decision) bool {
		active++
		return true
	})
	return s.alertCount, active, total
}
