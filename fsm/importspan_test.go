package fsm

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// An import that skips the IP index where a walk found it empty leaves
// exactly the state the walk per value leaves: lists in address order,
// reversed and shuffled, over existing decisions of the same and other
// origins, the same prefix under another spelling ("/32"), ranges, IPv6,
// a non-IP scope holding an address, and values repeated in one command.
func TestImportSpansMatchTheWalkPerValue(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	value := func() string {
		switch rng.IntN(7) {
		case 0, 1, 2:
			return fmt.Sprintf("10.0.%d.%d", rng.IntN(3), rng.IntN(40))
		case 3:
			return fmt.Sprintf("10.0.%d.%d/32", rng.IntN(3), rng.IntN(40))
		case 4:
			return fmt.Sprintf("10.0.%d.0/24", rng.IntN(3))
		case 5:
			return fmt.Sprintf("2001:db8::%x", rng.IntN(40))
		}
		return fmt.Sprintf("10.0.%d.%d/%d", rng.IntN(3), rng.IntN(40)&^3, 30)
	}
	origins := []string{"lists", "CAPI", "crowdsec"}
	skip, walk := newHarness(t), newHarness(t)
	defer func() { skipSpans = true }()
	apply := func(typ CmdType, ts int64, body any) {
		t.Helper()
		skipSpans = true
		rs := skip.apply(typ, ts, body)
		skipSpans = false
		rw := walk.apply(typ, ts, body)
		skipSpans = true
		if fmt.Sprint(rs) != fmt.Sprint(rw) {
			t.Fatalf("results differ: %+v with spans, %+v without", rs, rw)
		}
	}
	probes := []string{"10.0.0.3", "10.0.1.7", "10.0.2.0", "2001:db8::5"}
	streams := []streamQuery{{name: "startup", startup: true}, {name: "delta", cur: StreamCursor{Index: 2}}}
	ts := T0
	for round := range 30 {
		ts += sec
		// a few single decisions, some in a non-IP scope with an address
		// as their value
		for range 5 {
			d := withOrigin(ban(value(), ts+hour), origins[rng.IntN(len(origins))])
			if rng.IntN(5) == 0 {
				d.Scope = "Username"
			}
			body := ImportDecisions{Alert: pullAlert("single"), Decisions: []Decision{d}}
			apply(CmdImportDecisions, ts, body)
		}
		vals := make([]string, 20+rng.IntN(60))
		for i := range vals {
			vals[i] = value()
		}
		switch round % 3 {
		case 0:
			slices.SortFunc(vals, func(a, b string) int {
				ra, _ := ParseRange(a)
				rb, _ := ParseRange(b)
				return ComparePrefixes(ra.Prefix(), rb.Prefix())
			})
		case 1:
			slices.SortFunc(vals, func(a, b string) int {
				ra, _ := ParseRange(a)
				rb, _ := ParseRange(b)
				return -ComparePrefixes(ra.Prefix(), rb.Prefix())
			})
		}
		l := ImportList{Alert: pullAlert(fmt.Sprintf("lists:%d", round%4)), Origin: origins[rng.IntN(2)], Type: "ban", Scope: "Ip",
			Scenario: "s", Until: ts + hour, Seed: MustUUID("6f1c2a3b-4d5e-4f60-8172-000000000000"), Values: vals}
		apply(CmdImportList, ts, l)
		compareDumps(t, fmt.Sprintf("round %d", round), takeDump(t, skip.f, ts, probes, streams), takeDump(t, walk.f, ts, probes, streams))
	}
	replaced := 0
	skip.f.mu.Lock()
	skip.f.s.tombstones.Ascend(func(*Decision) bool { replaced++; return true })
	n := skip.f.s.decisions.Len()
	skip.f.mu.Unlock()
	if n < 500 || replaced == 0 {
		t.Fatalf("the scenario is too thin: %d decisions, %d tombstones", n, replaced)
	}
}
