package fsm

// The decision indexes of the state (by ID, by value, by IP prefix, by
// expiry, hand-expired and tombstones) and the lookups that use them.

import (
	"cmp"
	"sort"
	"sync"
)

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

func famIdx(f uint8) int {
	if f == 6 {
		return 1
	}
	return 0
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
	s.sameValueSkipping(v, r, nil, fn)
}

// ComparePrefixes orders prefixes as the IP index does: by family (the
// zero prefix of a value that is not an address first), start address,
// then length.
func ComparePrefixes(a, b Prefix) int {
	switch {
	case a.Fam != b.Fam:
		return cmp.Compare(a.Fam, b.Fam)
	case a.Start != b.Start:
		return a.Start.Cmp(b.Start)
	}
	return cmp.Compare(a.Bits, b.Bits)
}

// emptySpan is an open interval of IP prefixes (after, before) in which
// the IP index held no decision when a sameValueSkipping walk ended there
// (before unset: no end). Within one import command only the command's
// own decisions are added after that, and an import never replaces its
// own decisions (importEach), so a later lookup of a prefix inside the
// span can skip the walk: it would find nothing the import acts on. This
// turns a big list applied in address order into a few walks instead of
// one per value (they were a quarter of the apply).
type emptySpan struct {
	after, before Prefix
	set, open     bool // set: the span is known; open: no end (before unused)
}

func (e *emptySpan) holds(r Prefix) bool {
	return e != nil && e.set && ComparePrefixes(e.after, r) < 0 && (e.open || ComparePrefixes(r, e.before) < 0)
}

// skipSpans is off only in the test that compares imports with and
// without the spans.
var skipSpans = true

func importSpan(s *emptySpan) *emptySpan {
	if !skipSpans {
		return nil
	}
	return s
}

// sameValueSkipping is sameValue that records in span (when not nil) the
// empty stretch of the IP index it walked into after r, and skips the
// IP index for an r inside the span it was given. Only for callers whose
// fn ignores every decision added since the span was recorded.
func (s *state) sameValueSkipping(v string, r Prefix, span *emptySpan, fn func(*Decision) bool) {
	if r.Valid() && s.prefixes[famIdx(r.Fam)][r.Bits] > 0 && !span.holds(r) {
		stop := false
		p := getPivot()
		p.Range = r
		defer putPivot(p)
		ended := false
		s.ipIdx.AscendGreaterOrEqual(p, func(d *Decision) bool {
			if d.Range.Fam != r.Fam || d.Range.Start != r.Start || d.Range.Bits != r.Bits {
				if span != nil {
					*span = emptySpan{after: r, before: d.Range, set: true}
				}
				ended = true
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
		if !ended && span != nil {
			*span = emptySpan{after: r, set: true, open: true}
		}
	}
	if s.valueIdx.Len() == 0 {
		return // every decision is an address: nothing to look up by value
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
