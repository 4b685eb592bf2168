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

// StreamCursor is where a bouncer's previous pull ended.
type StreamCursor struct {
	Index    uint64 // raft index applied when the previous pull was served
	LastPull int64  // wall time of the previous pull (unix ns), 0 = never
}

// streamSlack is the overlap kept on natural expiries (CrowdSec uses 2 s).
const streamSlack = int64(2 * time.Second)

// Stream computes a bouncer stream answer. With startup (or a zero
// cursor) "new" holds every active deduplicated decision and "deleted"
// every expired one still stored; otherwise "new" holds the decisions
// created after the cursor index, and "deleted" those expired by hand after
// it, those whose until passed since the previous pull (minus a slack) and
// tombstones of hard-deleted ones. index is the applied index the answer
// reflects: the bouncer's next cursor.
func (f *FSM) Stream(flt *DecisionFilter, cur StreamCursor, startup bool, now time.Time) (newD, deleted []*Decision, index uint64) {
	return f.View().Stream(flt, cur, startup, now)
}

// View is the FSM's state at one applied index, immutable: every query on
// a View answers from the same state, without locks, however many entries
// are applied meanwhile. It holds the state's memory while referenced (the
// records themselves are shared with newer states), so keep it for one
// request, not longer.
type View struct{ s *state }

// View returns the last published state.
func (f *FSM) View() View { return View{s: f.read()} }

// Index is the raft index the view reflects (a stream's next cursor).
func (v View) Index() uint64 { return v.s.lastIndex }

// EachStartup calls fn, in ID order, for every decision a startup stream
// of flt at now lists: with active, the "new" ones (active, deduplicated
// unless flt.NoDedup); without, the "deleted" ones (expired, still
// stored). fn returns false to stop. Two calls on one View (new, then
// deleted) give exactly Stream's startup answer, without building it.
func (v View) EachStartup(flt *DecisionFilter, now time.Time, active bool, fn func(*Decision) bool) {
	n := now.UnixNano()
	s := v.s
	s.decisions.Ascend(func(d *Decision) bool {
		if (d.Until > n) != active || !flt.match(d) || (!flt.NoDedup && !s.longest(d)) {
			return true
		}
		return fn(d)
	})
}

// Stream is FSM.Stream on this view.
func (v View) Stream(flt *DecisionFilter, cur StreamCursor, startup bool, now time.Time) (newD, deleted []*Decision, index uint64) {
	n := now.UnixNano()
	s := v.s
	index = s.lastIndex
	keep := func(d *Decision) bool { return (flt.NoDedup || s.longest(d)) && flt.match(d) }
	if startup || (cur.Index == 0 && cur.LastPull == 0) {
		v.EachStartup(flt, now, true, func(d *Decision) bool { newD = append(newD, d); return true })
		v.EachStartup(flt, now, false, func(d *Decision) bool { deleted = append(deleted, d); return true })
		return newD, deleted, index
	}
	// new: created after the cursor. IDs grow with the raft index, so walk
	// down from the highest ID until the cursor is reached.
	s.decisions.Descend(func(d *Decision) bool {
		if d.CreatedIndex <= cur.Index {
			return false
		}
		if d.Until > n && keep(d) {
			newD = append(newD, d)
		}
		return true
	})
	reverse(newD)
	seen := map[int64]bool{}
	add := func(d *Decision) {
		if !seen[d.ID] {
			seen[d.ID] = true
			deleted = append(deleted, d)
		}
	}
	// expired by hand since the cursor
	s.deleted.AscendGreaterOrEqual(&Decision{DeletedIndex: cur.Index + 1}, func(d *Decision) bool {
		if d.Until <= n && keep(d) {
			add(d)
		}
		return true
	})
	// natural expiries since the previous pull
	if cur.LastPull > 0 {
		s.byUntil.AscendRange(&Decision{Until: cur.LastPull - streamSlack}, &Decision{Until: n + 1}, func(d *Decision) bool {
			if keep(d) {
				add(d)
			}
			return true
		})
	}
	// hard-deleted while active, unless something like it is still active
	s.tombstones.AscendGreaterOrEqual(&Decision{DeletedIndex: cur.Index + 1}, func(d *Decision) bool {
		if flt.match(d) && !s.anyActiveLike(d, n) {
			add(d)
		}
		return true
	})
	sort.Slice(deleted, func(i, j int) bool { return deleted[i].ID < deleted[j].ID })
	return newD, deleted, index
}

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
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

// JWTKey returns the cluster's JWT signing key (nil until set).
func (f *FSM) JWTKey() []byte {
	s := f.read()
	return s.jwtKey
}

// Machine returns a machine by ID, or nil.
func (f *FSM) Machine(id string) *Machine {
	s := f.read()
	return s.machines[id]
}

// Machines returns all machines sorted by ID.
func (f *FSM) Machines() []*Machine {
	s := f.read()
	out := make([]*Machine, 0, len(s.machines))
	for _, m := range s.machines {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Bouncer returns a bouncer by name, or nil.
func (f *FSM) Bouncer(name string) *Bouncer {
	s := f.read()
	return s.bouncers[name]
}

// Bouncers returns all bouncers sorted by creation time then name.
func (f *FSM) Bouncers() []*Bouncer {
	s := f.read()
	out := make([]*Bouncer, 0, len(s.bouncers))
	for _, b := range s.bouncers {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedAt != out[j].CreatedAt {
			return out[i].CreatedAt < out[j].CreatedAt
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// BouncersByKey returns the bouncers whose key hash is h, oldest first.
func (f *FSM) BouncersByKey(h string) []*Bouncer {
	s := f.read()
	var out []*Bouncer
	for _, name := range s.byKey[h] {
		if b := s.bouncers[name]; b != nil {
			out = append(out, b)
		}
	}
	if len(out) < 2 {
		return out
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].CreatedAt != out[j].CreatedAt {
			return out[i].CreatedAt < out[j].CreatedAt
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Allowlists returns all allowlists sorted by name.
func (f *FSM) Allowlists() []*Allowlist {
	s := f.read()
	out := make([]*Allowlist, 0, len(s.allowlists))
	for _, a := range s.allowlists {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Allowlist returns one allowlist, or nil.
func (f *FSM) Allowlist(name string) *Allowlist {
	s := f.read()
	return s.allowlists[name]
}

// AllowlistCheck returns the reasons value (IP or CIDR) is allowlisted:
// "<item> from <list>" plus " (<comment>)", sorted by list name.
func (f *FSM) AllowlistCheck(value string, now time.Time) ([]string, error) {
	r, err := ParseRange(value)
	if err != nil {
		return nil, err
	}
	n := now.UnixNano()
	var out []string
	for _, al := range f.Allowlists() {
		for _, it := range al.Items {
			if it.Expiration != 0 && it.Expiration < n {
				continue
			}
			if it.Range.Related(r) {
				reason := it.Value + " from " + al.Name
				if it.Comment != "" {
					reason += " (" + it.Comment + ")"
				}
				out = append(out, reason)
			}
		}
	}
	return out, nil
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

// Config returns a replicated setting, or nil.
func (f *FSM) Config(key string) []byte {
	s := f.read()
	return s.config[key]
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

// ConfigPrefix returns every setting whose key starts with prefix.
func (f *FSM) ConfigPrefix(prefix string) map[string][]byte {
	s := f.read()
	out := map[string][]byte{}
	for k, v := range s.config {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// AutoDeleteDue returns the machines and bouncers an AutoDelete with b's
// ages would delete if applied at now (the leader writes the command only
// when something is due; Apply decides again on the replicated state).
func (f *FSM) AutoDeleteDue(b AutoDelete, now time.Time) (machines, bouncers []string) {
	return f.read().autoDeleteVictims(&b, now.UnixNano())
}
