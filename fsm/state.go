package fsm

import (
	"maps"
	"sort"
	"sync"

	"github.com/google/btree"
)

// state is the in-memory replicated state and its indexes.
//
// Two kinds of state values exist. The writer's state (FSM.s) is changed
// only by the apply goroutine (and Restore), under FSM.mu. After each
// entry (or batch of entries) the writer publishes a frozen copy
// (publish): a shallow copy whose B-trees are O(1) copy-on-write clones.
// Readers load the published copy through an atomic pointer and never
// wait for an apply; a published state is never modified again. The maps
// (machines, bouncers, ...) are small and not copy-on-write in Go: the
// writer copies a map the first time it changes it after a publish
// (the shared bits and the w* accessors). done, doneOrder and strs are
// the writer's bookkeeping only and are nil in a published state.
type state struct {
	machines   map[string]*Machine
	bouncers   map[string]*Bouncer
	byKey      map[string][]string // API key hash -> bouncer names
	allowlists map[string]*Allowlist

	alerts    *btree.BTreeG[*Alert]    // by ID
	decisions *btree.BTreeG[*Decision] // by ID
	// valueIdx orders the decisions that are not in ipIdx (non-IP
	// scopes, or IP scopes whose value does not parse) by (value, ID).
	// Together with an exact-range lookup in ipIdx it finds every
	// decision with a given value (sameValue): dedup ("longest decision
	// wins") looks at the decisions of a value with the same type and
	// scope. A Go map would not be copy-on-write, and an entry per IP
	// decision cost ~65 bytes each.
	valueIdx *btree.BTreeG[*Decision]
	// ipIdx orders IP-scoped decisions by (family, start, bits, id);
	// prefixes counts the decisions per (family, prefix length) so that a
	// "covering" lookup probes only lengths that exist.
	ipIdx    *btree.BTreeG[*Decision]
	prefixes [2][129]int32
	byUntil  *btree.BTreeG[*Decision] // by (Until, ID)
	// deleted holds decisions expired by hand (DeletedIndex > 0) ordered by
	// (DeletedIndex, ID), and tombstones of hard-deleted active decisions,
	// so that streams report them as deleted.
	deleted    *btree.BTreeG[*Decision]
	tombstones *btree.BTreeG[*Decision]

	jwtKey []byte
	config map[string][]byte
	// profiles is the replicated profiles set (profiles.go), immutable.
	profiles *ProfileSet
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
	// restoredMaxID is the highest decision ID a restore has added so
	// far (readSnapshot).
	restoredMaxID int64
	// shared marks the maps that the last published state still uses:
	// the writer copies such a map before changing it.
	shared uint8
}

const (
	shMachines uint8 = 1 << iota
	shBouncers
	shByKey
	shAllowlists
	shConfig
	shAll = shMachines | shBouncers | shByKey | shAllowlists | shConfig
)

// publish returns a frozen copy of the writer's state for readers: the
// trees are cloned (O(1), copy-on-write both ways), the maps are shared
// until the writer next changes them.
func (s *state) publish() *state {
	p := *s
	p.alerts = s.alerts.Clone()
	p.decisions = s.decisions.Clone()
	p.valueIdx = s.valueIdx.Clone()
	p.ipIdx = s.ipIdx.Clone()
	p.byUntil = s.byUntil.Clone()
	p.deleted = s.deleted.Clone()
	p.tombstones = s.tombstones.Clone()
	p.done, p.doneOrder, p.strs = nil, nil, nil
	s.shared = shAll
	return &p
}

func ownMap[V any](s *state, bit uint8, m *map[string]V) map[string]V {
	if s.shared&bit != 0 {
		*m = maps.Clone(*m)
		s.shared &^= bit
	}
	return *m
}

// Writable maps of the writer's state (copied once after each publish).
func (s *state) wMachines() map[string]*Machine     { return ownMap(s, shMachines, &s.machines) }
func (s *state) wBouncers() map[string]*Bouncer     { return ownMap(s, shBouncers, &s.bouncers) }
func (s *state) wByKey() map[string][]string        { return ownMap(s, shByKey, &s.byKey) }
func (s *state) wAllowlists() map[string]*Allowlist { return ownMap(s, shAllowlists, &s.allowlists) }
func (s *state) wConfig() map[string][]byte         { return ownMap(s, shConfig, &s.config) }

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

func byValueOrder(a, b *Decision) bool {
	if a.Value != b.Value {
		return a.Value < b.Value
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
		valueIdx:       btree.NewG(32, byValueOrder),
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
		s.wByKey()[b.KeyHash] = append(s.byKey[b.KeyHash], b.Name)
	}
	s.wBouncers()[b.Name] = b
}

func (s *state) deleteBouncer(name string) bool {
	b, ok := s.bouncers[name]
	if !ok {
		return false
	}
	delete(s.wBouncers(), name)
	names := s.byKey[b.KeyHash]
	for i, n := range names {
		if n == name {
			names = append(names[:i:i], names[i+1:]...)
			break
		}
	}
	if len(names) == 0 {
		delete(s.wByKey(), b.KeyHash)
	} else {
		s.wByKey()[b.KeyHash] = names
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
	if d.Range.Valid() {
		s.ipIdx.ReplaceOrInsert(d)
		s.prefixes[famIdx(d.Range.Fam)][d.Range.Bits]++
	} else {
		s.valueIdx.ReplaceOrInsert(d)
	}
	s.byUntil.ReplaceOrInsert(d)
	if d.DeletedIndex > 0 {
		s.deleted.ReplaceOrInsert(d)
	}
}

// removeDecision drops d (the exact pointer held in the state) from every index.
func (s *state) removeDecision(d *Decision) {
	s.decisions.Delete(d)
	if d.Range.Valid() {
		s.ipIdx.Delete(d)
		s.prefixes[famIdx(d.Range.Fam)][d.Range.Bits]--
	} else {
		s.valueIdx.Delete(d)
	}
	s.byUntil.Delete(d)
	if d.DeletedIndex > 0 {
		s.deleted.Delete(d)
	}
}

// pivots recycles the search keys of the hot lookups (a decision
// lookup, a value or prefix probe per imported decision and per query):
// a fresh 176-byte key each time was most of an import's allocations.
var pivots = sync.Pool{New: func() any { return new(Decision) }}

func getPivot() *Decision { return pivots.Get().(*Decision) }

func putPivot(p *Decision) {
	*p = Decision{}
	pivots.Put(p)
}

func (s *state) decision(id int64) *Decision {
	p := getPivot()
	p.ID = id
	d, _ := s.decisions.Get(p)
	putPivot(p)
	return d
}

func (s *state) alert(id int64) *Alert {
	a, _ := s.alerts.Get(&Alert{ID: id})
	return a
}

// longest reports whether no decision with the same value, type and scope
// has a strictly later until (CrowdSec's stream dedup).
func (s *state) longest(d *Decision) bool {
	ok := true
	s.sameValue(d.Value, d.Range, func(o *Decision) bool {
		if o.Until > d.Until && o.Type == d.Type && o.Scope == d.Scope {
			ok = false
		}
		return ok
	})
	return ok
}

// anyActiveLike reports whether an active decision with d's value, type and scope exists.
func (s *state) anyActiveLike(d *Decision, now int64) bool {
	found := false
	s.sameValue(d.Value, d.Range, func(o *Decision) bool {
		found = o.Until > now && o.Type == d.Type && o.Scope == d.Scope
		return !found
	})
	return found
}

// sameValue calls fn for every stored decision whose value is exactly v
// (IP ones first, then the others; ID order within each); fn returns false
// to stop. An IP decision with value v is indexed under exactly
// parsePrefix(v): pass that to see every decision with value v. A caller
// looking for decisions with the scope of a decision d may pass d.Range:
// decisions with d's value and scope are in the same index as d.
func (s *state) sameValue(v string, r Prefix, fn func(*Decision) bool) {
	if r.Valid() && s.prefixes[famIdx(r.Fam)][r.Bits] > 0 {
		stop := false
		p := getPivot()
		p.Range = r
		defer putPivot(p)
		s.ipIdx.AscendGreaterOrEqual(p, func(d *Decision) bool {
			if d.Range.Fam != r.Fam || d.Range.Start != r.Start || d.Range.Bits != r.Bits {
				return false
			}
			if d.Value == v && !fn(d) {
				stop = true
				return false
			}
			return true
		})
		if stop {
			return
		}
	}
	p := getPivot()
	p.Value = v
	defer putPivot(p)
	s.valueIdx.AscendGreaterOrEqual(p, func(d *Decision) bool {
		if d.Value != v {
			return false
		}
		return fn(d)
	})
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
		pivot := getPivot()
		pivot.Range = Prefix{Fam: q.Fam, Bits: uint8(bits), Start: start}
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
		putPivot(pivot)
		if stop {
			return
		}
	}
}

// inside calls fn for every IP decision whose range lies within q.
func (s *state) inside(q IPRange, fn func(*Decision) bool) {
	pivot := &Decision{Range: Prefix{Fam: q.Fam, Start: q.Start}}
	s.ipIdx.AscendGreaterOrEqual(pivot, func(d *Decision) bool {
		if d.Range.Fam != q.Fam || q.End.Less(d.Range.Start) {
			return false
		}
		if !q.End.Less(d.Range.End()) {
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
