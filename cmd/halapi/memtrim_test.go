package main

import (
	"testing"
	"time"
)

// A burst of allocation is followed by one trim once it is over; steady
// small allocation neither triggers one nor holds one back for ever; a
// collection forced by someone else (the stream scavenger) counts as one.
func TestTrimmerAfterABurst(t *testing.T) {
	var cur trimSample
	trims := 0
	tr := newTrimmer(func() trimSample { return cur }, func() { trims++; cur.forced++ })
	now := time.Unix(0, 0)
	step := func(alloc uint64) bool {
		cur.allocs += alloc
		now = now.Add(trimTick)
		return tr.tick(now)
	}
	step(0)
	perTick := func(rate float64) uint64 { return uint64(rate * trimTick.Seconds()) }
	for range 100 { // 50 s of a lightly loaded node: 200 KB/s
		step(perTick(200 << 10))
	}
	if trims != 0 {
		t.Fatal("trimmed after small allocations only")
	}
	for range 20 { // an import: 40 MiB/s for 10 s
		if step(perTick(40 << 20)) {
			t.Fatal("trimmed during the import")
		}
	}
	// Over: small allocations go on. No trim before trimQuiet has passed.
	quietTicks := int(trimQuiet / trimTick)
	for i := range quietTicks {
		trimmed := step(perTick(200 << 10))
		if trimmed != (i == quietTicks-1) {
			t.Fatalf("tick %d after the import: trimmed %v", i+1, trimmed)
		}
	}
	for range 100 {
		step(perTick(200 << 10))
	}
	if trims != 1 {
		t.Fatalf("%d trims, want still 1", trims)
	}

	// A pause shorter than trimQuiet inside a burst does not trim.
	for range 10 {
		step(perTick(40 << 20))
	}
	for range quietTicks - 1 {
		step(0)
	}
	for range 10 {
		step(perTick(40 << 20))
	}
	if trims != 1 {
		t.Fatalf("trimmed in a %s pause of a burst", trimQuiet-trimTick)
	}

	// With a big live heap a burst must allocate half of it: a node
	// holding 1 GiB that allocated 300 MiB is left to the runtime.
	cur.live = 1 << 30
	for range 10 {
		step(30 << 20)
	}
	for range 3 * quietTicks {
		step(0)
	}
	if trims != 1 {
		t.Fatalf("trimmed after allocating under half the live heap")
	}
	for range 10 {
		step(30 << 20)
	}
	for range quietTicks {
		step(0)
	}
	if trims != 2 {
		t.Fatalf("%d trims after allocating more than half of a 1 GiB live heap, want 2", trims)
	}
	cur.live = 0

	// Late ticks (the process got no CPU) are not quiet, however little
	// was allocated.
	for range 10 {
		step(perTick(40 << 20))
	}
	for range 3 * quietTicks {
		now = now.Add(3 * trimTick)
		if step(0) {
			t.Fatal("trimmed on late ticks")
		}
	}
	for i := range quietTicks {
		if trimmed := step(0); trimmed != (i == quietTicks-1) {
			t.Fatalf("on-time tick %d after late ones: trimmed %v", i+1, trimmed)
		}
	}
	if trims != 3 {
		t.Fatalf("%d trims, want 3", trims)
	}

	// Someone else forces a collection right after the burst: nothing left
	// to trim.
	for range 10 {
		step(perTick(40 << 20))
	}
	cur.forced++
	for range 3 * quietTicks {
		step(0)
	}
	if trims != 3 {
		t.Fatalf("%d trims after a forced collection, want 3", trims)
	}
}

func TestParseMapsLine(t *testing.T) {
	for _, c := range []struct {
		line, path string
		start      uintptr
		ok         bool
	}{
		{"7f1c2a000000-7f1c2a200000 r--s 00000000 fd:01 1234                       /var/lib/halapi/raft/raft.db", "/var/lib/halapi/raft/raft.db", 0x7f1c2a000000, true},
		{"7f1c2a000000-7f1c2a200000 r--s 00000000 fd:01 1234   /data/a dir/raft.db", "/data/a dir/raft.db", 0x7f1c2a000000, true},
		{"c000000000-c004000000 rw-p 00000000 00:00 0 ", "", 0xc000000000, true},
		{"garbage", "", 0, false},
		{"zz-10 r--s 0 0 0 /x", "", 0, false},
	} {
		s, _, p, ok := parseMapsLine(c.line)
		if ok != c.ok || (ok && (p != c.path || s != c.start)) {
			t.Errorf("%q: %x %q %v", c.line, s, p, ok)
		}
	}
}
