package cluster

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/internal/testutil"
)

func freePort(t *testing.T) string { return testutil.FreeAddr(t) }

func freeUDPTCPPort(t *testing.T) string { return testutil.FreeGossipAddr(t) }

type testNode struct {
	id, raftAddr, gossipAddr, dir string
	n                             *Node
}

func startCluster(t *testing.T, size int, deadTimeout time.Duration) []*testNode {
	t.Helper()
	nodes := make([]*testNode, size)
	for i := range nodes {
		nodes[i] = &testNode{id: fmt.Sprintf("n%d", i+1), raftAddr: freePort(t), gossipAddr: freeUDPTCPPort(t), dir: t.TempDir()}
	}
	for _, tn := range nodes {
		tn.start(t, nodes[0].gossipAddr, size, deadTimeout)
	}
	t.Cleanup(func() {
		for _, tn := range nodes {
			if tn.n != nil {
				_ = tn.n.Close()
			}
		}
	})
	return nodes
}

func (tn *testNode) start(t *testing.T, join string, expect int, deadTimeout time.Duration) {
	t.Helper()
	n, err := Open(Config{NodeID: tn.id, DataDir: tn.dir, RaftAddr: tn.raftAddr, GossipAddr: tn.gossipAddr,
		Join: []string{join}, BootstrapExpect: expect, DeadNodeTimeout: deadTimeout, APIURL: "http://" + tn.id}, fsm.New(nil))
	if err != nil {
		t.Fatal(err)
	}
	tn.n = n
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, d, what, cond)
}

func leaderOf(nodes []*testNode) *testNode {
	for _, tn := range nodes {
		if tn.n != nil && tn.n.IsLeader() {
			return tn
		}
	}
	return nil
}

// formed waits until a leader has every node as a voter, and returns it
// and the followers.
func formed(t *testing.T, nodes []*testNode) (leader *testNode, followers []*testNode) {
	t.Helper()
	waitFor(t, fmt.Sprintf("a leader with %d voters", len(nodes)), 15*time.Second, func() bool {
		l := leaderOf(nodes)
		return l != nil && voters(l.n) == len(nodes)
	})
	leader = leaderOf(nodes)
	for _, tn := range nodes {
		if tn != leader {
			followers = append(followers, tn)
		}
	}
	// formed also means every follower has heard from that leader: a
	// follower that has not yet had an AppendEntries knows no leader, and
	// tests that ask it to forward or sync would race the first heartbeat
	waitFor(t, "every follower knows the leader", 15*time.Second, func() bool {
		for _, f := range followers {
			if _, id := f.n.raft.LeaderWithID(); string(id) != leader.n.cfg.NodeID {
				return false
			}
		}
		return true
	})
	return leader, followers
}

func voters(n *Node) int {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	return len(f.Configuration().Servers)
}

func TestClusterFormsForwardsAndHeals(t *testing.T) {
	nodes := startCluster(t, 3, 2*time.Second)
	leader, followers := formed(t, nodes)
	follower := followers[0]
	// a write on a follower is forwarded and readable there at once
	ctx := context.Background()
	res, err := follower.n.Apply(ctx, fsm.Command{Type: fsm.CmdMachineCreate, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "m1", AuthType: fsm.AuthPassword}}})
	if err != nil || res.Err() != nil {
		t.Fatalf("forwarded apply: %v %+v", err, res)
	}
	if follower.n.FSM.Machine("m1") == nil {
		t.Fatal("read-your-writes violated on the follower")
	}
	// command errors travel back through the forwarder
	res, err = follower.n.Apply(ctx, fsm.Command{Type: fsm.CmdMachineUpdate, Body: fsm.MachineUpdate{ID: "nobody"}})
	if err != nil || !errors.Is(res.Err(), fsm.ErrNotFound) {
		t.Fatalf("forwarded error: %v %+v", err, res)
	}
	st := follower.n.Status(ctx)
	if st.Leader != leader.id || len(st.Members) != 3 {
		t.Fatalf("status %+v", st)
	}
	for _, m := range st.Members {
		if m.State != "alive" || m.AppliedIndex == 0 || m.APIURL == "" || m.GossipAddr == "" {
			t.Fatalf("member %+v", m)
		}
	}

	// lose the leader: another node takes over and accepts writes
	_ = leader.n.Close()
	leader.n = nil
	waitFor(t, "a new leader", 10*time.Second, func() bool { return leaderOf(nodes) != nil })
	res, err = follower.n.Apply(ctx, fsm.Command{Type: fsm.CmdMachineCreate, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "m2", AuthType: fsm.AuthPassword}}})
	if err != nil || res.Err() != nil {
		t.Fatalf("apply after failover: %v %+v", err, res)
	}
	// the dead node is removed once gone longer than the timeout
	newLeader := leaderOf(nodes)
	waitFor(t, "dead node removed from raft", 20*time.Second, func() bool {
		return voters(newLeader.n) == 2
	})

	// it comes back with the same command line and is added again, with all data
	leader.start(t, follower.gossipAddr, 3, 2*time.Second)
	waitFor(t, "old leader re-added and caught up", 20*time.Second, func() bool {
		return voters(newLeader.n) == 3 && leader.n.FSM.Machine("m2") != nil
	})
}

func TestRemoveNeedsLeaderAndKeepsRemovedOut(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	leader, followers := formed(t, nodes)
	victim, other := followers[0], followers[1]
	ctx := context.Background()
	if err := other.n.Remove(ctx, "nope"); err == nil {
		t.Fatal("removing an unknown node must fail")
	}
	if err := other.n.Remove(ctx, victim.id); err != nil {
		t.Fatalf("remove through a follower: %v", err)
	}
	waitFor(t, "2 voters", 10*time.Second, func() bool { return voters(leader.n) == 2 })
	waitFor(t, "the removed node to stop raft and leave gossip", 10*time.Second, func() bool { return victim.n.left.Load() })
	// the removed node is still alive in gossip, but is not added back
	// over several membership rounds
	rounds := leader.n.reconciles.Load()
	waitFor(t, "4 reconcile rounds", 10*time.Second, func() bool { return leader.n.reconciles.Load() >= rounds+4 })
	if v := voters(leader.n); v != 2 {
		t.Fatalf("removed node re-added: %d voters", v)
	}
}
