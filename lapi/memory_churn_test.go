package lapi

import (
	"testing"
	"time"
)

// A big import is followed by one scavenge once it is over; steady small
// writes (Touch entries) neither trigger one nor hold one back for ever;
// a live shared encoding defers it.
func TestChurnScavengerAfterBigApplies(t *testing.T) {
	var churn uint64
	busy := false
	c := &churnScavenger{churn: func() uint64 { return churn }, busy: func() bool { return busy }, free: func() {}}
	now := time.Unix(0, 0)
	step := func(add uint64) {
		churn += add
		now = now.Add(churnTick)
		c.tick(now)
	}
	step(0)
	for range 30 { // steady small writes: 70 KB/s
		step(70 << 10)
	}
	if c.runs.Load() != 0 {
		t.Fatal("scavenged after small writes only")
	}
	for range 10 { // an import: 20 MiB/s for 10 s
		step(20 << 20)
	}
	if c.runs.Load() != 0 {
		t.Fatal("scavenged during the import")
	}
	busy = true
	for range 5 { // over, small writes go on, an encoding is live
		step(70 << 10)
	}
	if c.runs.Load() != 0 {
		t.Fatal("scavenged while a shared encoding was live")
	}
	busy = false
	step(70 << 10)
	if c.runs.Load() != 1 {
		t.Fatalf("%d scavenges after the import, want 1", c.runs.Load())
	}
	for range 10 {
		step(70 << 10)
	}
	if c.runs.Load() != 1 {
		t.Fatalf("%d scavenges, want still 1", c.runs.Load())
	}
}
