package fsm

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// Scale benchmarks (issue 9): memory per stored decision, bulk import
// speed, snapshot persist/restore of a big list. Run with
//
//	go test -run '^$' -bench Scale -benchtime 1x -benchmem ./fsm/
//
// Sizes default to 1,000,000 decisions; -short uses 100,000.

func scaleN() int {
	if testing.Short() {
		return 100_000
	}
	return 1_000_000
}

// capiDecision returns the i-th decision of a CAPI-like list (IPv4 /32,
// a few IPv6 addresses and ranges), with a canonical UUID.
func capiDecision(i int, until int64) Decision {
	v := fmt.Sprintf("%d.%d.%d.%d", 1+i>>24&0x7f, i>>16&0xff, i>>8&0xff, i&0xff)
	switch {
	case i%97 == 0:
		v = fmt.Sprintf("2001:db8:%x:%x::1", i>>16&0xffff, i&0xffff)
	case i%101 == 0:
		v = fmt.Sprintf("10.%d.%d.0/24", i>>8&0xff, i&0xff)
	}
	return Decision{UUID: MustUUID(fmt.Sprintf("%08x-1234-4abc-8def-%012x", i, i)), Origin: "CAPI", Type: "ban", Scope: "ip", Value: v,
		Scenario: "crowdsecurity/ssh-bf", Until: until}
}

// importEntries encodes n decisions as ImportDecisions entries of chunk
// decisions each, the first creating the alert (ID 1).
func importEntries(tb testing.TB, n, chunk int) [][]byte {
	var out [][]byte
	for i := 0; i < n; i += chunk {
		b := ImportDecisions{}
		if i == 0 {
			b.Alert = Alert{Scenario: "update : +n/-0 IPs", StartAt: T0, StopAt: T0, Source: Source{Scope: "crowdsec/community-blocklist"}}
		} else {
			b.AlertID = 1
		}
		for j := i; j < min(i+chunk, n); j++ {
			b.Decisions = append(b.Decisions, capiDecision(j, T0+24*hour))
		}
		out = append(out, entry(tb, CmdImportDecisions, T0, b))
	}
	return out
}

// cpuTime is the process's user+system CPU time: on a shared machine it
// moves far less with the load than wall time does.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func loadImport(b *testing.B, n, chunk int) *harness {
	entries := importEntries(b, n, chunk)
	h := newBenchHarness(b)
	for _, e := range entries {
		if r := h.raw(e).(*Result); r.Err() != nil {
			b.Fatalf("import: %v", r.Err())
		}
	}
	return h
}

// BenchmarkScaleMemory reports the live heap per stored decision.
func BenchmarkScaleMemory(b *testing.B) {
	n := scaleN()
	for i := 0; i < b.N; i++ {
		base := liveHeap()
		entries := importEntries(b, n, 10_000)
		h := newBenchHarness(b)
		for _, e := range entries {
			h.raw(e)
		}
		entries = nil
		heap := liveHeap()
		b.ReportMetric(float64(heap-base)/float64(n), "bytes/decision")
		runtime.KeepAlive(h)
	}
}

// BenchmarkScaleImport applies n decisions in ImportDecisions entries of
// 5,000 (capi's chunk) through Apply, decode included.
func BenchmarkScaleImport(b *testing.B) {
	n := scaleN()
	entries := importEntries(b, n, 5000)
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
}

// BenchmarkScalePersistRestore snapshots n decisions and restores them
// into a new FSM (a node catching up), plain and s2-compressed. The sink
// is grown first: growing a 260 MB buffer was most of what persist-ms
// measured.
func BenchmarkScalePersistRestore(b *testing.B) {
	n := scaleN()
	h := loadImport(b, n, 10_000)
	for _, compress := range []bool{false, true} {
		b.Run(fmt.Sprintf("compressed=%v", compress), func(b *testing.B) {
			h.f.SetCompressedSnapshots(compress)
			for i := 0; i < b.N; i++ {
				snap, err := h.f.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				sink := &memSink{}
				sink.Grow(300 * n)
				runtime.GC()
				t0, c0 := time.Now(), cpuTime()
				if err := snap.Persist(sink); err != nil {
					b.Fatal(err)
				}
				t1, c1 := time.Now(), cpuTime()
				data := sink.Bytes()
				f := New(quietLogger())
				if err := f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
					b.Fatal(err)
				}
				t2, c2 := time.Now(), cpuTime()
				b.ReportMetric(float64(len(data))/float64(n), "snapbytes/decision")
				b.ReportMetric(float64(t1.Sub(t0).Milliseconds()), "persist-ms")
				b.ReportMetric(float64(t2.Sub(t1).Milliseconds()), "restore-ms")
				b.ReportMetric(float64((c1 - c0).Milliseconds()), "persist-cpu-ms")
				b.ReportMetric(float64((c2 - c1).Milliseconds()), "restore-cpu-ms")
				if _, _, total := f.Counts(at(T0)); total != n {
					b.Fatalf("restored %d decisions, want %d", total, n)
				}
			}
		})
	}
}
