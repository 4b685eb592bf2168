package fsm

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

// listEntries encodes n blocklist values (IPv4, in scattered or ascending
// order) as ImportList entries of chunk values, the first creating the
// alert (ID 1).
func listEntries(tb testing.TB, n, chunk int, scattered bool) [][]byte {
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
	var out [][]byte
	for i := 0; i < n; i += chunk {
		b := ImportList{Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "bench", Until: T0 + 24*hour,
			Seed: MustUUID("6f1c2a3b-4d5e-4f60-8172-000000000000"), Values: vals[i:min(i+chunk, n)]}
		if i == 0 {
			b.Alert = Alert{Scenario: "update : +n/-0 IPs", StartAt: T0, StopAt: T0, Source: Source{Scope: "lists:bench"}}
		} else {
			b.AlertID = 1
		}
		out = append(out, entry(tb, CmdImportList, T0, b))
	}
	return out
}

// BenchmarkScaleImportList applies n values in ImportList entries of
// 50,000 (capi's list chunk), decode included: in the list's order
// (scattered addresses) and sorted by address.
func BenchmarkScaleImportList(b *testing.B) {
	for _, scattered := range []bool{true, false} {
		b.Run(fmt.Sprintf("scattered=%v", scattered), func(b *testing.B) {
			n := scaleN()
			entries := listEntries(b, n, 50_000, scattered)
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
