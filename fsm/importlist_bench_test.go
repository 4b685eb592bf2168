package fsm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// pullValues is a blocklist of n IPv4 addresses, in scattered (a real
// list's) or ascending order.
func pullValues(n int, scattered bool) []string {
	vals := make([]string, n)
	for i := range vals {
		x := uint32(i)
		if scattered {
			x = uint32(uint64(i) * 2654435761 % (1 << 24))
		}
		vals[i] = fmt.Sprintf("%d.%d.%d.%d", 20+x>>24, x>>16&0xff, x>>8&0xff, x&0xff)
	}
	if scattered {
		rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { vals[i], vals[j] = vals[j], vals[i] })
	}
	return vals
}

// pullEntries encodes a blocklist as capi writes it: ImportDecisions
// entries of chunk decisions (list false) or ImportList entries of chunk
// values, the first creating the alert (ID 1).
func pullEntries(tb testing.TB, vals []string, chunk int, list bool) [][]byte {
	alert := Alert{Scenario: "update : +n/-0 IPs", StartAt: T0, StopAt: T0, Source: Source{Scope: "lists:bench"}}
	seed := MustUUID("6f1c2a3b-4d5e-4f60-8172-000000000000")
	var out [][]byte
	for i := 0; i < len(vals); i += chunk {
		l := ImportList{Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "bench", Until: T0 + 24*hour,
			Seed: UUIDAt(seed, i), Values: vals[i:min(i+chunk, len(vals))]}
		if i == 0 {
			l.Alert = alert
		} else {
			l.AlertID = 1
		}
		if list {
			out = append(out, entry(tb, CmdImportList, T0, l))
		} else {
			out = append(out, entry(tb, CmdImportDecisions, T0, l.Expand()))
		}
	}
	return out
}

// BenchmarkScalePull applies a 1M-value blocklist as a node receives it,
// decode included: capi's entries before issue 9's bulk work (ImportDecisions
// of 5,000, in the list's order) and after (ImportList of 50,000, in
// address order), and the two steps apart.
func BenchmarkScalePull(b *testing.B) {
	for _, c := range []struct {
		name            string
		chunk           int
		list, scattered bool
	}{
		{"decisions-5000-scattered", 5000, false, true},
		{"list-50000-scattered", 50_000, true, true},
		{"decisions-5000-sorted", 5000, false, false},
		{"list-50000-sorted", 50_000, true, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			n := scaleN()
			entries := pullEntries(b, pullValues(n, c.scattered), c.chunk, c.list)
			var bytes int
			for _, e := range entries {
				bytes += len(e)
			}
			runtime.GC()
			b.ResetTimer()
			c0 := cpuTime()
			for i := 0; i < b.N; i++ {
				h := newBenchHarness(b)
				for _, e := range entries {
					h.raw(e)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/list")
			b.ReportMetric(float64((cpuTime()-c0).Milliseconds())/float64(b.N), "cpu-ms/list")
			b.ReportMetric(float64(bytes)/float64(n), "entrybytes/decision")
		})
	}
}
