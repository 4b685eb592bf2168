package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

// Concurrent writes through a follower: every one applied once and
// readable there at once, and they travel in fewer RPCs than writes.
func TestForwardsCombined(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	_, followers := formed(t, nodes)
	f := followers[0].n
	const writers, each = 8, 25
	writeMachines(t, f, "m", writers, each)
	writes, rpcs := counterValue(f.metrics.forwardedOut), counterValue(f.metrics.forwardRPCs)
	t.Logf("%v forwarded writes in %v RPCs", writes, rpcs)
	if writes != writers*each || rpcs >= writes {
		t.Fatalf("%v forwarded writes in %v RPCs: want %d writes, fewer RPCs", writes, rpcs, writers*each)
	}
}

func writeMachines(t *testing.T, n *Node, prefix string, writers, each int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("%s-%d-%d", prefix, w, i)
				res, err := n.Apply(context.Background(), fsm.Command{Type: fsm.CmdMachineCreate,
					Body: fsm.MachineCreate{Machine: fsm.Machine{ID: id, AuthType: fsm.AuthPassword}}})
				if err == nil {
					err = res.Err()
				}
				if err == nil && n.FSM.Machine(id) == nil {
					err = fmt.Errorf("%s not readable after its write returned", id)
				}
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A leader that does not know rpcApplyMany (an older version) answers
// "unknown rpc": the follower's writes still go through, one RPC each from
// then on.
func TestForwardsToALeaderWithoutCombining(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	leader, followers := formed(t, nodes)
	leader.n.refuseApplyMany.Store(true)
	f := followers[0].n
	writeMachines(t, f, "old", 8, 10)
	addr, _ := f.raft.LeaderWithID()
	f.combine.mu.Lock()
	q := f.combine.qs[string(addr)]
	single := q != nil && q.single
	f.combine.mu.Unlock()
	if !single {
		t.Fatal("the follower did not fall back to one RPC per write")
	}
	before := counterValue(f.metrics.forwardRPCs)
	writeMachines(t, f, "after", 4, 5)
	if n := counterValue(f.metrics.forwardRPCs) - before; n != 20 {
		t.Fatalf("20 writes after the fallback in %v RPCs, want 20", n)
	}
}

// The leader's side: a combined RPC answers each command on its own (an
// invalid one refused, the others applied, in order); a malformed payload
// is refused whole; a follower answers NotLeader.
func TestApplyManyAnswers(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	leader, followers := formed(t, nodes)
	enc := func(c fsm.Command) []byte {
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mk := func(id string) []byte {
		return enc(fsm.Command{Type: fsm.CmdMachineCreate, ID: "req-" + id, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: id, AuthType: fsm.AuthPassword}}})
	}
	invalid := enc(fsm.Command{Type: fsm.CmdMachineCreate, ID: "req-bad", Body: fsm.MachineCreate{}})
	ctx := context.Background()
	resp := leader.n.applyManyRPC(ctx, encodeMany([][]byte{mk("a1"), invalid, mk("a2")}))
	if resp.Fail != "" || len(resp.Many) != 3 {
		t.Fatalf("answer %+v", resp)
	}
	if r := resp.Many[1]; r.Code != fsm.CodeInvalid || r.Index != 0 {
		t.Errorf("invalid command answered %+v", r)
	}
	if a, b := resp.Many[0], resp.Many[2]; a.Code != fsm.CodeOK || b.Code != fsm.CodeOK || a.Index == 0 || b.Index <= a.Index {
		t.Errorf("valid commands answered %+v and %+v (want applied, in order)", a, b)
	}
	if leader.n.FSM.Machine("a1") == nil || leader.n.FSM.Machine("a2") == nil {
		t.Error("combined writes not applied")
	}
	for _, bad := range [][]byte{nil, {0}, {0, 0}, {0, 1, 0, 0, 0, 9, 1}, append(encodeMany([][]byte{mk("x")}), 7), {0xff, 0xff}} {
		if r := leader.n.applyManyRPC(ctx, bad); r.Fail == "" {
			t.Errorf("payload %x accepted: %+v", bad, r)
		}
	}
	if r := followers[0].n.applyManyRPC(ctx, encodeMany([][]byte{mk("f1")})); !r.NotLeader {
		t.Errorf("a follower answered %+v", r)
	}
}

// decodeMany takes back what encodeMany wrote, and never reads past its
// input whatever it is given.
func FuzzDecodeMany(f *testing.F) {
	f.Add(encodeMany([][]byte{[]byte("a"), nil, []byte("bcd")}))
	f.Add([]byte{0, 2, 0, 0, 0, 1})
	f.Add([]byte{0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := decodeMany(b)
		if err != nil {
			return
		}
		if len(cmds) == 0 || len(cmds) > maxCombined {
			t.Fatalf("%d commands", len(cmds))
		}
		if again := encodeMany(cmds); string(again) != string(b) {
			t.Fatalf("re-encoded %x, read %x", again, b)
		}
	})
}

// A write too big to wait in the queue goes at once on its own RPC.
func TestBigForwardNotQueued(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	_, followers := formed(t, nodes)
	f := followers[0].n
	addr, _ := f.raft.LeaderWithID()
	// hold the queue as if a forward were in flight: a small write waits,
	// a big one does not
	f.combine.mu.Lock()
	if f.combine.qs == nil {
		f.combine.qs = map[string]*fwdQueue{}
	}
	f.combine.qs[string(addr)] = &fwdQueue{running: true}
	f.combine.mu.Unlock()
	big := make([]string, 0, 25000)
	for i := range cap(big) {
		big = append(big, fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
	}
	cmd := fsm.Command{Type: fsm.CmdImportList, Body: fsm.ImportList{Alert: fsm.Alert{Scenario: "big", Source: fsm.Source{Scope: "lists:big", Value: "lists:big"}},
		Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "big", Until: time.Now().Add(time.Hour).UnixNano(), Values: big}}
	data, err := cmd.Encode()
	if err != nil || len(data) <= combineMax {
		t.Fatalf("test entry of %d bytes (%v), want > %d", len(data), err, combineMax)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := f.forwardApply(ctx, string(addr), data)
	if err != nil || resp.Fail != "" || resp.NotLeader || resp.Index == 0 {
		t.Fatalf("big forward: %+v, %v", resp, err)
	}
	small, _ := fsm.Command{Type: fsm.CmdMachineCreate, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "s", AuthType: fsm.AuthPassword}}}.Encode()
	sctx, scancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer scancel()
	if _, err := f.forwardApply(sctx, string(addr), small); err == nil {
		t.Fatal("a small write did not wait behind the forward in flight")
	}
}
