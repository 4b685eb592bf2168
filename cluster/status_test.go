package cluster

import (
	"testing"
	"time"
)

// A node whose newest entries are ones the FSM never sees (the leader's
// no-op after an election, configuration changes) still reports itself
// caught up with the commit index: status counts raft's applied index too.
func TestStatusAppliedCountsEntriesTheFSMNeverSees(t *testing.T) {
	nodes := startCluster(t, 1, time.Minute)
	leader, _ := formed(t, nodes)
	var st Status
	waitFor(t, "applied index to reach the commit index", 10*time.Second, func() bool {
		st = leader.n.localStatus()
		return st.CommitIndex > 0 && st.AppliedIndex >= st.CommitIndex
	})
	if fsmIdx := leader.n.FSM.AppliedIndex(); fsmIdx >= st.CommitIndex {
		t.Fatalf("the FSM applied %d of %d entries: this test needs entries the FSM never sees", fsmIdx, st.CommitIndex)
	}
}
