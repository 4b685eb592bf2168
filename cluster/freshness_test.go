package cluster

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestSyncLeaderAndWaitReplicated(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	leader, followers := formed(t, nodes)
	f := followers[0].n
	ctx := context.Background()

	// a write on the leader, then SyncLeader on a follower: the follower
	// has applied every command the leader had committed before the call
	createMachine(t, leader.n, "m1")
	target := leader.n.commandTarget()
	if err := f.SyncLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.FSM.AppliedIndex(); got < target {
		t.Fatalf("after SyncLeader the follower applied %d < leader's last committed command %d", got, target)
	}
	if f.FSM.Machine("m1") == nil {
		t.Fatal("follower misses m1 after SyncLeader")
	}
	// entries the FSM never sees (a barrier, like a new leader's) at the
	// end of the log do not make SyncLeader wait for the next write
	if err := leader.n.raft.Barrier(5 * time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for _, nd := range []*Node{f, leader.n} {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		err := nd.SyncLeader(sctx)
		cancel()
		if err != nil {
			t.Fatalf("SyncLeader after a barrier: %v", err)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("SyncLeader after a barrier took %v (one round is at most %v away)", d, freshInterval)
	}

	// concurrent callers share round trips: 200 at once cost a couple
	rpcs0 := counterValue(f.metrics.freshRPCs)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- f.SyncLeader(ctx)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := counterValue(f.metrics.freshRPCs) - rpcs0; n < 1 || n > 3 {
		t.Fatalf("200 concurrent SyncLeader calls made %v leader round trips, want 1..3", n)
	}
	// rounds are at least freshInterval apart
	start = time.Now()
	for range 3 {
		if err := f.SyncLeader(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 2*freshInterval {
		t.Fatalf("3 sequential rounds took %v, want >= %v", d, 2*freshInterval)
	}
	// the leader itself needs no round trip
	lr := counterValue(leader.n.metrics.freshRPCs)
	if err := leader.n.SyncLeader(ctx); err != nil || counterValue(leader.n.metrics.freshRPCs) != lr {
		t.Fatalf("SyncLeader on the leader: %v, rpcs %v -> %v", err, lr, counterValue(leader.n.metrics.freshRPCs))
	}

	// WaitReplicated: a write forwarded by a follower is applied everywhere
	res, err := f.Apply(ctx, fsm.Command{Type: fsm.CmdMachineCreate, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "m2", AuthType: fsm.AuthPassword}}})
	if err != nil || res.Err() != nil {
		t.Fatalf("apply: %v %+v", err, res)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := f.WaitReplicated(wctx, f.FSM.AppliedIndex()); err != nil {
		t.Fatal(err)
	}
	for _, tn := range nodes {
		if tn.n.FSM.Machine("m2") == nil {
			t.Fatalf("%s misses m2 after WaitReplicated", tn.id)
		}
	}

	// a stopped member is not waited for
	other := followers[1]
	_ = other.n.Close()
	other.n = nil
	createMachine(t, leader.n, "m3")
	start = time.Now()
	wctx2, cancel2 := context.WithTimeout(ctx, 10*time.Second)
	defer cancel2()
	if err := leader.n.WaitReplicated(wctx2, leader.n.FSM.AppliedIndex()); err != nil {
		t.Fatalf("WaitReplicated with a stopped member: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("WaitReplicated waited %v for a stopped member", d)
	}

	// without a leader the follower is told so (it then decides locally)
	_ = leader.n.Close()
	leader.n = nil
	start = time.Now()
	if err := f.SyncLeader(ctx); err == nil {
		t.Fatal("SyncLeader succeeded without a leader")
	}
	if d := time.Since(start); d > freshTimeout+time.Second {
		t.Fatalf("SyncLeader without a leader took %v", d)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// Which members WaitReplicated waits for: any member behind whose status
// was read and that gossip does not report gone, whatever else gossip
// says of it (TestSyncLeaderAndWaitReplicated failed in CI when a
// follower that had not applied the write was skipped as not yet alive).
func TestWaitForMember(t *testing.T) {
	follower := func(state MemberState, applied uint64) Member {
		return Member{ID: "n2", State: string(state), Role: string(RoleFollower), AppliedIndex: applied}
	}
	for _, c := range []struct {
		name string
		m    Member
		want bool
	}{
		{"alive, behind", follower(MemberAlive, 4), true},
		{"alive, caught up", follower(MemberAlive, 5), false},
		{"alive, ahead", follower(MemberAlive, 6), false},
		{"suspect, behind", follower(MemberSuspect, 4), true},
		{"unknown to gossip, behind", follower(MemberUnknown, 4), true},
		{"dead", follower(MemberDead, 0), false},
		{"left", follower(MemberLeft, 0), false},
		{"status unreadable", Member{ID: "n2", State: string(MemberAlive), Role: string(RoleFollower), Error: "i/o timeout"}, false},
		{"joining, not in raft yet", Member{ID: "n4", State: string(MemberAlive), Role: string(RoleJoining)}, false},
		{"nonvoter, behind", Member{ID: "n5", State: string(MemberAlive), Role: string(RoleNonvoter), AppliedIndex: 1}, true},
	} {
		if got := mustWaitFor(c.m, 5); got != c.want {
			t.Errorf("%s: mustWaitFor %v, want %v", c.name, got, c.want)
		}
	}
}
