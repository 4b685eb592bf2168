package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// TestTouchesRelayedToLeader: a follower's touches reach the leader's sink
// over the cluster port without a raft entry; the leader refuses a relay
// that is not a valid touch, and a node whose leader gathers nothing
// (no sink: an older version) is told so, to write them itself.
func TestTouchesRelayedToLeader(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	leader, followers := formed(t, nodes)
	follower := followers[0]
	waitFor(t, "the follower knows the leader", 10*time.Second, func() bool {
		addr, _ := follower.n.raft.LeaderWithID()
		return addr != ""
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	touch := fsm.Touch{Bouncers: []fsm.BouncerTouch{{Name: "fw", LastPull: 42, Cursor: 7}},
		Machines: []fsm.MachineTouch{{ID: "m", LastHeartbeat: 43}}}

	// No sink on the leader yet: the follower is told to write them itself.
	if err := follower.n.RelayTouches(ctx, touch); !errors.Is(err, ErrRelayUnsupported) {
		t.Fatalf("relay to a leader without a sink: %v, want ErrRelayUnsupported", err)
	}

	var mu sync.Mutex
	var got []fsm.Touch
	for _, tn := range nodes {
		tn.n.OnTouches(func(t fsm.Touch) {
			mu.Lock()
			got = append(got, t)
			mu.Unlock()
		})
	}
	before := leader.n.raft.LastIndex()
	if err := follower.n.RelayTouches(ctx, touch); err != nil {
		t.Fatalf("relay: %v", err)
	}
	mu.Lock()
	if len(got) != 1 || len(got[0].Bouncers) != 1 || got[0].Bouncers[0] != touch.Bouncers[0] || got[0].Machines[0] != touch.Machines[0] {
		t.Fatalf("the leader's sink got %+v, want %+v", got, touch)
	}
	mu.Unlock()
	// other entries may land meanwhile (the cluster's own upkeep): none
	// may be a touch
	for i := before + 1; i <= leader.n.raft.LastIndex(); i++ {
		var l raft.Log
		if err := leader.n.logs.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if l.Type == raft.LogCommand {
			if c, err := fsm.Decode(l.Data); err == nil && c.Type == fsm.CmdTouch {
				t.Fatalf("a relay appended a raft entry of touches (index %d)", i)
			}
		}
	}

	// On the leader itself the sink is called directly.
	if err := leader.n.RelayTouches(ctx, touch); err != nil {
		t.Fatalf("relay on the leader: %v", err)
	}

	// Invalid relays are refused and reach no sink.
	mu.Lock()
	got = nil
	mu.Unlock()
	addr := leader.raftAddr
	bad := fsm.Touch{Bouncers: []fsm.BouncerTouch{{Name: ""}}}
	badEntry, err := fsm.Command{Type: fsm.CmdTouch, Body: bad}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	other, err := fsm.Command{Type: fsm.CmdMachineDelete, Body: fsm.MachineDelete{IDs: []string{"m"}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	for name, payload := range map[string][]byte{"garbage": []byte("not a command"), "invalid touch": badEntry, "not a touch": other} {
		resp, err := follower.n.rpc.call(ctx, addr, rpcTouch, payload)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if resp.Fail == "" || resp.NotLeader {
			t.Errorf("%s: answer %+v, want a refusal", name, resp)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 0 {
		t.Fatalf("refused relays reached the sink: %+v", got)
	}
	// A follower asked to gather says it does not lead.
	resp, err := leader.n.rpc.call(ctx, follower.raftAddr, rpcTouch, badEntry)
	if err != nil || !resp.NotLeader {
		t.Fatalf("relay to a follower: %+v %v, want not_leader", resp, err)
	}
}
