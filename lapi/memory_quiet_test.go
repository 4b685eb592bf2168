package lapi

import (
	"sync/atomic"
	"testing"
	"time"
)

// The storm scavenger waits while the process allocates at a bulk rate (a
// pull or an import applying) and runs once that work is over.
func TestScavengerWaitsForBulkWork(t *testing.T) {
	var bulk atomic.Bool
	var allocs, calls atomic.Uint64
	var freed atomic.Int64
	bulk.Store(true)
	s := &scavenger{c: &streamCache{}, quiet: time.Millisecond, min: 1,
		free: func() { freed.Add(1) },
		allocs: func() uint64 {
			calls.Add(1)
			if bulk.Load() {
				return allocs.Add(1 << 30) // far over scavengeQuietRate per quiet period
			}
			return allocs.Load()
		}}
	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	s.released(1 << 20)
	poll("ten checks during the bulk work", func() bool { return calls.Load() >= 20 })
	if n := freed.Load(); n != 0 {
		t.Fatalf("scavenged %d times during bulk work", n)
	}
	bulk.Store(false)
	poll("the scavenge after the work", func() bool { return freed.Load() > 0 })
	s.mu.Lock()
	pending, timer := s.pending, s.timer
	s.mu.Unlock()
	if n := freed.Load(); n != 1 || s.runs.Load() != 1 || pending != 0 || timer != nil {
		t.Fatalf("after the work: %d scavenges, %d runs, %d pending, timer %v; want 1, 1, 0, none", n, s.runs.Load(), pending, timer != nil)
	}
}
