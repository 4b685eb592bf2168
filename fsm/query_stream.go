package fsm

// Read side: bouncer streams and Views (one published state for a whole
// request).

import (
	"cmp"
	"math"
	"slices"
	"sort"
	"time"
)

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

// StartupWalk is a startup stream's walk over one View, in a form an
// encoder can split: "deleted" as a list (usually short), "new" by ID
// range, so parts of it can be encoded at once on several cores while
// the first part is already being sent. Its answers are exactly
// Stream's startup answer (TestStartupWalkSameAsStream).
//
// Dedup ("longest decision wins") is resolved up front: one pass over
// the value indexes, where decisions with the same value are adjacent,
// lists the decisions a longer one with the same value, type and scope
// outranks (usually none). The walk then skips them without the per
// decision index lookup of state.longest, which was most of a
// million-decision startup's walk.
type StartupWalk struct {
	s      *state
	flt    *DecisionFilter
	now    int64
	losers []int64 // sorted IDs of the decisions dedup drops (nil with NoDedup)
}

// StartupWalk prepares the startup answer of flt at now on this view.
func (v View) StartupWalk(flt *DecisionFilter, now time.Time) *StartupWalk {
	w := &StartupWalk{s: v.s, flt: flt, now: now.UnixNano()}
	if !flt.NoDedup {
		w.losers = v.s.dedupLosers()
	}
	return w
}

// Len is the number of stored decisions (a bound on the answer's).
func (w *StartupWalk) Len() int { return w.s.decisions.Len() }

// IDSpan returns the lowest stored decision ID and the highest plus one
// (0, 0 when there is none): every "new" decision has lo <= ID < hi.
func (w *StartupWalk) IDSpan() (lo, hi int64) {
	mn, ok := w.s.decisions.Min()
	if !ok {
		return 0, 0
	}
	mx, _ := w.s.decisions.Max()
	return mn.ID, mx.ID + 1
}

func (w *StartupWalk) lost(id int64) bool {
	_, found := slices.BinarySearch(w.losers, id)
	return found
}

// Deleted returns the answer's "deleted" decisions (expired, still
// stored), in ID order.
func (w *StartupWalk) Deleted() []*Decision {
	var out []*Decision
	p := getPivot()
	p.Until, p.ID = w.now+1, math.MinInt64
	w.s.byUntil.AscendLessThan(p, func(d *Decision) bool {
		if w.flt.match(d) && !w.lost(d.ID) {
			out = append(out, d)
		}
		return true
	})
	putPivot(p)
	slices.SortFunc(out, func(a, b *Decision) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// New calls fn, in ID order, for every "new" decision (active, matching,
// not outranked) with lo <= ID < hi; fn returns false to stop. Calls on
// disjoint ranges may run at once.
func (w *StartupWalk) New(lo, hi int64, fn func(*Decision) bool) {
	if lo >= hi {
		return
	}
	losers := w.losers
	if i, _ := slices.BinarySearch(losers, lo); i > 0 {
		losers = losers[i:]
	}
	plo, phi := getPivot(), getPivot()
	plo.ID, phi.ID = lo, hi
	w.s.decisions.AscendRange(plo, phi, func(d *Decision) bool {
		if d.Until <= w.now || !w.flt.match(d) {
			return true
		}
		for len(losers) > 0 && losers[0] < d.ID {
			losers = losers[1:]
		}
		if len(losers) > 0 && losers[0] == d.ID {
			return true
		}
		return fn(d)
	})
	putPivot(plo)
	putPivot(phi)
}

// dedupLosers lists, sorted, the IDs of the stored decisions for which a
// decision with the same value, type and scope and a strictly later until
// exists (those state.longest rejects). Decisions with one value are
// adjacent in ipIdx (same prefix; a prefix is a function of the scope and
// the value, so both of a pair are in the same index) and in valueIdx.
func (s *state) dedupLosers() []int64 {
	var losers []int64
	var group []*Decision
	flush := func() {
		if len(group) > 1 {
			losers = appendLosers(losers, group)
		}
		group = group[:0]
	}
	s.ipIdx.Ascend(func(d *Decision) bool {
		if len(group) > 0 && group[0].Range != d.Range {
			flush()
		}
		group = append(group, d)
		return true
	})
	flush()
	s.valueIdx.Ascend(func(d *Decision) bool {
		if len(group) > 0 && group[0].Value != d.Value {
			flush()
		}
		group = append(group, d)
		return true
	})
	flush()
	slices.Sort(losers)
	return losers
}

// appendLosers appends the IDs of the decisions of g (one prefix or one
// value) that another of g with the same value, type and scope outlasts.
func appendLosers(losers []int64, g []*Decision) []int64 {
	type key struct{ value, typ, scope string }
	if len(g) <= 16 {
		for _, d := range g {
			for _, o := range g {
				if o.Until > d.Until && o.Value == d.Value && o.Type == d.Type && o.Scope == d.Scope {
					losers = append(losers, d.ID)
					break
				}
			}
		}
		return losers
	}
	longest := make(map[key]int64, 4)
	for _, d := range g {
		k := key{d.Value, d.Type, d.Scope}
		if u, ok := longest[k]; !ok || d.Until > u {
			longest[k] = d.Until
		}
	}
	for _, d := range g {
		if d.Until < longest[key{d.Value, d.Type, d.Scope}] {
			losers = append(losers, d.ID)
		}
	}
	return losers
}
