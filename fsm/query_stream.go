package fsm

// Read side: bouncer streams and Views (one published state for a whole
// request).

import (
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
