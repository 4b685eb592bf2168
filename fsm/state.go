package fsm

import (
	"sort"

	"github.com/google/btree"
)

// state is the in-memory replicated state and its indexes. It is only
// touched under FSM.mu (write lock in apply/restore, read lock in queries).
type state struct {
	machines   map[string]*Machine
	bouncers   map[string]*Bouncer
	byKey      map[string][]string // API key hash -> bouncer names
	allowlists map[string]*Allowlist

	alerts    *btree.BTreeG[*Alert]    // by ID
	decisions *btree.BTreeG[*Decision] // by ID
	// byValue groups decisions by value; dedup ("longest decision wins")
	// looks at the decisions of a group with the same type and scope.
	byValue map[string][]*Decision
	// ipIdx orders IP-scoped decisions by (family, start, bits, id);
	// prefixes counts the decisions per (family, prefix length) so that a
	// "covering" lookup probes only lengths that exist.
	ipIdx    *btree.BTreeG[*Decision]
	prefixes [2][129]int
	byUntil  *btree.BTreeG[*Decision] // by (Until, ID)
	// deleted holds decisions expired by hand (DeletedIndex > 0) ordered by
	// (DeletedIndex, ID), and tombstones of hard-deleted active decisions,
	// so that streams report them as deleted.
	deleted    *btree.BTreeG[*Decision]
	tombstones *btree.BTreeG[*Decision]

	jwtKey []byte
	config map[string][]byte
	// done remembers the results of the last idempotent commands (by
	// request ID), so a retried write is applied once (dedupCap entries,
	// oldest dropped first).
	done      map[string]*Result
	doneOrder []string
	// strs interns the few distinct origins, types, scopes and scenarios
	// so a million decisions share their strings (memory target: 1M
	// decisions well under 1 GiB).
	strs           map[string]string
	nextAlertID    int64
	nextDecisionID int64
	lastIndex      uint64
	alertCount     int
}

func byID(a, b *Decision) bool { return a.ID < b.ID }

func byIP(a, b *Decision) bool {
	if a.Range.Fam != b.Range.Fam {
		return a.Range.Fam < b.Range.Fam
	}
	if c := a.Range.Start.Cmp(b.Range.Start); c != 0 {
		return c < 0
	}
	if a.Range.Bits != b.Range.Bits {
		return a.Range.Bits < b.Range.Bits
	}
	return a.ID < b.ID
}

func byUntilOrder(a, b *Decision) bool {
	if a.Until != b.Until {
		return a.Until < b.Until
	}
	return a.ID < b.ID
}

func byDeletedIndex(a, b *Decision) bool {
	if a.DeletedIndex != b.DeletedIndex {
		return a.DeletedIndex < b.DeletedIndex
	}
	return a.ID < b.ID
}

func newState() *state {
	return &state{
		machines:       map[string]*Machine{},
		bouncers:       map[string]*Bouncer{},
		byKey:          map[string][]string{},
		allowlists:     map[string]*Allowlist{},
		config:         map[string][]byte{},
		strs:           map[string]string{},
		done:           map[string]*Result{},
		alerts:         btree.NewG(32, func(a, b *Alert) bool { return a.ID < b.ID }),
		decisions:      btree.NewG(32, byID),
		byValue:        map[string][]*Decision{},
		ipIdx:          btree.NewG(32, byIP),
		byUntil:        btree.NewG(32, byUntilOrder),
		deleted:        btree.NewG(32, byDeletedIndex),
		tombstones:     btree.NewG(32, byDeletedIndex),
		nextAlertID:    1,
		nextDecisionID: 1,
	}
}

func famIdx(f uint8) int {
	if f == 6 {
		return 1
	}
	return 0
}

func (s *state) putBouncer(b *Bouncer) {
	if _, ok := s.bouncers[b.Name]; !ok {
		s.byKey[b.KeyHash] = append(s.byKey[b.KeyHash], b.Name)
	}
	s.bouncers[b.Name] = b
}

func (s *state) deleteBouncer(name string) bool {
	b, ok := s.bouncers[name]
	if !ok {
		return false
	}
	delete(s.bouncers, name)
	names := s.byKey[b.KeyHash]
	for i, n := range names {
		if n == name {
			names = append(names[:i:i], names[i+1:]...)
			break
		}
	}
	if len(names) == 0 {
		delete(s.byKey, b.KeyHash)
	} else {
		s.byKey[b.KeyHash] = names
	}
	return true
}

// dedupCap bounds the remembered request IDs: far more than the writes
// that can be in flight while a leader changes.
const dedupCap = 1 << 16

func (s *state) seen(id string) (*Result, bool) {
	if id == "" {
		return nil, false
	}
	r, ok := s.done[id]
	return r, ok
}

func (s *state) remember(id string, r *Result) {
	if id == "" {
		return
	}
	if len(s.doneOrder) >= dedupCap {
		delete(s.done, s.doneOrder[0])
		s.doneOrder = s.doneOrder[1:]
	}
	s.done[id] = r
	s.doneOrder = append(s.doneOrder, id)
}

func (s *state) intern(v string) string {
	if x, ok := s.strs[v]; ok {
		return x
	}
	if len(s.strs) < 1<<16 {
		s.strs[v] = v
	}
	return v
}

// addDecision indexes d everywhere.
func (s *state) addDecision(d *Decision) {
	d.Origin, d.Type, d.Scope, d.Scenario = s.intern(d.Origin), s.intern(d.Type), s.intern(d.Scope), s.intern(d.Scenario)
	s.decisions.ReplaceOrInsert(d)
	s.byValue[d.Value] = append(s.byValue[d.Value], d)
	if d.Range.Valid() {
		s.ipIdx.ReplaceOrInsert(d)
		s.prefixes[famIdx(d.Range.Fam)][d.Range.Bits]++
	}
	s.byUntil.ReplaceOrInsert(d)
	if d.DeletedIndex > 0 {
		s.deleted.ReplaceOrInsert(d)
	}
}

// removeDecision drops d (the exact pointer held in the state) from every index.
func (s *state) removeDecision(d *Decision) {
	s.decisions.Delete(d)
	g := s.byValue[d.Value]
	for i, x := range g {
		if x.ID == d.ID {
			g = append(g[:i:i], g[i+1:]...)
			break
		}
	}
	if len(g) == 0 {
		delete(s.byValue, d.Value)
	} else {
		s.byValue[d.Value] = g
	}
	if d.Range.Valid() {
		s.ipIdx.Delete(d)
		s.prefixes[famIdx(d.Range.Fam)][d.Range.Bits]--
	}
	s.byUntil.Delete(d)
	if d.DeletedIndex > 0 {
		s.deleted.Delete(d)
	}
}

func (s *state) decision(id int64) *Decision {
	d, _ := s.decisions.Get(&Decision{ID: id})
	return d
}

func (s *state) alert(id int64) *Alert {
	a, _ := s.alerts.Get(&Alert{ID: id})
	return a
}

// longest reports whether no decision with the same value, type and scope
// has a strictly later until (CrowdSec's stream dedup).
func (s *state) longest(d *Decision) bool {
	for _, o := range s.byValue[d.Value] {
		if o.Until > d.Until && o.Type == d.Type && o.Scope == d.Scope {
			return false
		}
	}
	return true
}

// anyActiveLike reports whether an active decision with d's value, type and scope exists.
func (s *state) anyActiveLike(d *Decision, now int64) bool {
	for _, o := range s.byValue[d.Value] {
		if o.Until > now && o.Type == d.Type && o.Scope == d.Scope {
			return true
		}
	}
	return false
}

// covering calls fn for every IP decision whose range contains q, in no
// particular order; fn returns false to stop.
func (s *state) covering(q IPRange, fn func(*Decision) bool) {
	fi := famIdx(q.Fam)
	for bits := 0; bits <= int(q.Bits); bits++ {
		if s.prefixes[fi][bits] == 0 {
			continue
		}
		start := maskTo(q.Fam, q.Start, bits)
		pivot := &Decision{Range: IPRange{Fam: q.Fam, Bits: uint8(bits), Start: start}}
		stop := false
		s.ipIdx.AscendGreaterOrEqual(pivot, func(d *Decision) bool {
			if d.Range.Fam != q.Fam || d.Range.Start != start || int(d.Range.Bits) != bits {
				return false
			}
			if !fn(d) {
				stop = true
				return false
			}
			return true
		})
		if stop {
			return
		}
	}
}

// inside calls fn for every IP decision whose range lies within q.
func (s *state) inside(q IPRange, fn func(*Decision) bool) {
	pivot := &Decision{Range: IPRange{Fam: q.Fam, Start: q.Start}}
	s.ipIdx.AscendGreaterOrEqual(pivot, func(d *Decision) bool {
		if d.Range.Fam != q.Fam || q.End.Less(d.Range.Start) {
			return false
		}
		if !q.End.Less(d.Range.End) {
			return fn(d)
		}
		return true
	})
}

// ipCandidates returns the decisions matching an IP filter, sorted by ID.
func (s *state) ipCandidates(q IPRange, contains bool) []*Decision {
	var out []*Decision
	collect := func(d *Decision) bool { out = append(out, d); return true }
	if contains {
		s.covering(q, collect)
	} else {
		s.inside(q, collect)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
