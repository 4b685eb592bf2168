package capi

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/halapi/halapi/fsm"
)

// sortPulled orders a list exactly as sorting the records with
// comparePulled does: IPv4 and IPv6 addresses and ranges, IPv6 prefixes
// that agree on their first 62 bits (equal keys), values that are not
// addresses, duplicates, and lists already in order.
func TestSortPulledMatchesTheComparator(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	value := func() string {
		switch rng.IntN(6) {
		case 0:
			return fmt.Sprintf("10.%d.%d.%d", rng.IntN(4), rng.IntN(256), rng.IntN(256))
		case 1:
			return fmt.Sprintf("10.%d.%d.0/%d", rng.IntN(4), rng.IntN(256), 16+rng.IntN(17))
		case 2: // the first 62 bits are the same for all of these
			return fmt.Sprintf("2001:db8::%x", rng.IntN(1<<16))
		case 3:
			return fmt.Sprintf("2001:db8:%x::/%d", rng.IntN(8), 32+rng.IntN(97))
		case 4:
			return fmt.Sprintf("%x::%x", rng.IntN(1<<16), rng.IntN(16))
		}
		return fmt.Sprintf("user-%d", rng.IntN(50)) // not an address: Range zero
	}
	tmpl := &pullTemplate{}
	for _, n := range []int{0, 1, 2, 17, 1000, 20000} {
		ds := make([]pulled, n)
		for i := range ds {
			v := value()
			r, _ := fsm.ParseRange(v)
			ds[i] = pulled{Range: r.Prefix(), Until: int64(i), Value: v, t: tmpl}
		}
		for _, sorted := range []bool{false, true} {
			in := slices.Clone(ds)
			if sorted {
				slices.SortStableFunc(in, func(a, b pulled) int { return comparePulled(&a, &b) })
			}
			want := slices.Clone(in)
			slices.SortStableFunc(want, func(a, b pulled) int { return comparePulled(&a, &b) })
			got := slices.Clone(in)
			sortPulled(got)
			for i := range want {
				// duplicates of a value may come in either order: compare
				// what the order is made of, and that no record was lost
				if comparePulled(&got[i], &want[i]) != 0 {
					t.Fatalf("n=%d sorted=%v: at %d got %q (%+v), want %q (%+v)", n, sorted, i, got[i].Value, got[i].Range, want[i].Value, want[i].Range)
				}
			}
			seen := map[int64]bool{}
			for _, d := range got {
				seen[d.Until] = true
			}
			if len(seen) != n {
				t.Fatalf("n=%d: %d distinct records after the sort", n, len(seen))
			}
		}
	}
}

// radixSortKeys is a stable sort by key, whichever of the eight bytes
// vary.
func TestRadixSortKeysIsAStableSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, mask := range []uint64{0, 0xff, 0xff00ff0000000000, 0x7, ^uint64(0)} {
		ks := make([]sortKey, 5000)
		for i := range ks {
			ks[i] = sortKey{k: 1<<62 | rng.Uint64()&mask, i: int32(i)}
		}
		want := slices.Clone(ks)
		slices.SortStableFunc(want, func(a, b sortKey) int { return cmp.Compare(a.k, b.k) })
		radixSortKeys(ks)
		if !slices.Equal(ks, want) {
			t.Fatalf("mask %#x: radix order differs from a stable sort", mask)
		}
	}
}
