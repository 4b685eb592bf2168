package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The group commit counters: every follower reports the batches raft
// handed its state machine and the entries in them, and the writes show.
func TestApplyBatchMetrics(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	leader, followers := formed(t, nodes)
	for i := range 5 {
		createMachine(t, leader.n, fmt.Sprintf("m%d", i))
	}
	f := followers[0].n
	target := leader.n.commandTarget()
	waitFor(t, "the follower applies the writes", 10*time.Second, func() bool { return f.FSM.AppliedIndex() >= target })
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if len(mf.Metric) == 1 && mf.Metric[0].Counter != nil {
			got[mf.GetName()] = mf.Metric[0].Counter.GetValue()
		}
	}
	batches, entries := got["halapi_fsm_apply_batches_total"], got["halapi_fsm_applied_entries_total"]
	if batches < 1 || entries < 5 || entries < batches {
		t.Fatalf("follower: %v batches, %v entries after 5 writes", batches, entries)
	}
	// read after the scrape: never fewer
	if b, e := f.FSM.ApplyCounts(); float64(b) < batches || float64(e) < entries {
		t.Fatalf("metrics %v / %v, FSM %d / %d", batches, entries, b, e)
	}
}
