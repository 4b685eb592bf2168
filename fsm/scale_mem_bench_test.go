package fsm

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkScaleReadsDuringFreeOSMemory measures what returning the heap
// (debug.FreeOSMemory: a full collection, then every free page handed back)
// costs the readers of a node holding n decisions: IP lookups run back to
// back on one goroutine (GOMAXPROCS-1 others are left to the collector)
// while the heap is returned once. It reports the lookups' p99 and max
// latency before and during it, and how long it took. The node's idle
// trimmer (cmd/halapi/memtrim.go) does exactly this once a burst is over.
func BenchmarkScaleReadsDuringFreeOSMemory(b *testing.B) {
	n := scaleN()
	h := loadImport(b, n, 5000)
	now := time.Unix(0, T0).Add(time.Hour)
	var (
		stop   atomic.Bool
		phase  atomic.Int32 // 0 before, 1 during
		mu     sync.Mutex
		before []time.Duration
		during []time.Duration
		wg     sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		var mine [2][]time.Duration
		for i := 0; !stop.Load(); i++ {
			d := capiDecision(i%n, 0)
			r, err := ParseRange(d.Value)
			if err != nil {
				panic(err)
			}
			ph := phase.Load()
			t0 := time.Now()
			got := h.f.Decisions(&DecisionFilter{IP: &r, Contains: true}, now)
			mine[ph] = append(mine[ph], time.Since(t0))
			if len(got) == 0 {
				panic(fmt.Sprintf("no decision for %s", d.Value))
			}
		}
		mu.Lock()
		before, during = mine[0], mine[1]
		mu.Unlock()
	}()
	time.Sleep(time.Second) // a baseline of lookups
	b.ResetTimer()
	phase.Store(1)
	t0 := time.Now()
	for range b.N {
		debug.FreeOSMemory()
	}
	took := time.Since(t0) / time.Duration(b.N)
	stop.Store(true)
	wg.Wait()
	q := func(ds []time.Duration, p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		slices.Sort(ds)
		return float64(ds[min(len(ds)-1, int(float64(len(ds))*p))].Microseconds())
	}
	b.ReportMetric(float64(took.Milliseconds()), "ms/free")
	b.ReportMetric(q(before, 0.99), "p99-before-µs")
	b.ReportMetric(q(before, 1), "max-before-µs")
	b.ReportMetric(q(during, 0.99), "p99-during-µs")
	b.ReportMetric(q(during, 1), "max-during-µs")
	runtime.KeepAlive(h)
}
