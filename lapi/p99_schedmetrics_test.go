package lapi

import (
	"runtime"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/halapi/halapi/fsm"
)

// TestSchedulerHistogramsExposed checks that /metrics carries the Go
// scheduler's latency histogram (the bench reads it to tell a node waiting
// for CPU from slow handlers) and that it counts goroutines made to wait:
// a goroutine started while every P is busy is counted.
func TestSchedulerHistogramsExposed(t *testing.T) {
	m := newMetrics(fsm.New(nil), time.Now)
	count := func() uint64 {
		t.Helper()
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "go_sched_latencies_seconds" {
				if mf.GetType() != dto.MetricType_HISTOGRAM {
					t.Fatalf("go_sched_latencies_seconds is a %v", mf.GetType())
				}
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("go_sched_latencies_seconds not exposed")
		return 0
	}
	before := count()
	var wg sync.WaitGroup
	for range 4 * runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1e5; i++ {
				_ = i * i
			}
		}()
	}
	wg.Wait()
	if after := count(); after <= before {
		t.Errorf("go_sched_latencies_seconds sample count %d -> %d after scheduling goroutines", before, after)
	}
	mfs, _ := m.Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "go_sched_pauses_total_gc_seconds" {
			return
		}
	}
	t.Error("go_sched_pauses_total_gc_seconds (stop-the-world GC pauses) not exposed")
}
