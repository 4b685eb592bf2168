package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

// A peer holding a node certificate can send anything over the forwarding
// RPC. The leader must refuse what does not decode or validate, commit
// nothing, and keep working: such an entry would otherwise be applied by
// every node after every restart.
func TestLeaderRefusesInvalidForwardedCommands(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	// An election in the middle (possible on a loaded machine) appends a
	// no-op entry and moves the leader: that attempt proves nothing, so
	// it is run again.
	for attempt := 1; ; attempt++ {
		if refusedWithoutCommit(t, nodes, attempt) {
			return
		}
		if attempt == 3 {
			t.Fatal("leadership changed during every attempt")
		}
	}
}

// refusedWithoutCommit runs the checks once; false means leadership
// changed meanwhile.
func refusedWithoutCommit(t *testing.T, nodes []*testNode, attempt int) bool {
	t.Helper()
	waitFor(t, "a leader with 3 voters", 15*time.Second, func() bool {
		l := leaderOf(nodes)
		return l != nil && voters(l.n) == 3
	})
	leader := leaderOf(nodes)
	term := leader.n.raft.CurrentTerm()
	stable := func() bool { return leader.n.IsLeader() && leader.n.raft.CurrentTerm() == term }
	var follower *testNode
	for _, tn := range nodes {
		if tn != leader {
			follower = tn
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// a first write through the follower, so every node has applied up to
	// a known index
	if res, err := follower.n.Apply(ctx, fsm.Command{Type: fsm.CmdMachineCreate,
		Body: fsm.MachineCreate{Machine: fsm.Machine{ID: fmt.Sprintf("before-%d", attempt), AuthType: fsm.AuthPassword}}}); err != nil || res.Err() != nil {
		t.Fatalf("valid write: %v %+v", err, res)
	}
	last := leader.n.raft.LastIndex()

	valid, err := fsm.Command{Type: fsm.CmdMachineCreate, ID: "req-1",
		Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "x"}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	invalidBody, err := fsm.Command{Type: fsm.CmdMachineCreate, ID: "req-2",
		Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "evil\nname"}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	wrongShape := append(append([]byte(nil), valid[:11+len("req-1")]...), []byte(`{"machine":{"id":7}}`)...)
	cases := []struct {
		name    string
		payload []byte
		msg     string
	}{
		{"garbage", []byte("\x01\x02garbage that is not a command"), "undecodable command"},
		{"empty", nil, "undecodable command"},
		{"unknown type", append([]byte{1, 0x66}, valid[2:]...), "unknown command type"},
		{"body of the wrong shape", wrongShape, "undecodable command"},
		{"decodable but invalid", invalidBody, "machine.id: contains a control character"},
		{"missing required name", mustEncode(t, fsm.Command{Type: fsm.CmdAllowlistCreate, Body: fsm.AllowlistCreate{}}), "name: is required"},
		{"unparsable IP decision", mustEncode(t, fsm.Command{Type: fsm.CmdImportDecisions, Body: fsm.ImportDecisions{
			Decisions: []fsm.Decision{{Origin: "CAPI", Type: "ban", Scope: "Ip", Value: "1.2.3.999"}}}}), "invalid ip address"},
	}
	for _, c := range cases {
		resp, err := follower.n.rpc.call(ctx, leader.raftAddr, rpcApply, c.payload)
		if err != nil {
			t.Fatalf("%s: rpc: %v", c.name, err)
		}
		if resp.NotLeader {
			return false
		}
		if resp.Code != fsm.CodeInvalid || resp.Index != 0 || resp.Fail != "" || !strings.Contains(resp.Err, c.msg) {
			t.Errorf("%s: response %+v, want code invalid, index 0, message containing %q", c.name, resp, c.msg)
		}
	}
	// through Node.Apply on a follower the same refusal comes back as a
	// command-level result, with its code
	res, err := follower.n.Apply(ctx, fsm.Command{Type: fsm.CmdBouncerCreate, Body: fsm.BouncerCreate{Bouncer: fsm.Bouncer{Name: strings.Repeat("b", fsm.MaxName+1)}}})
	if err != nil || res.Code != fsm.CodeInvalid {
		t.Fatalf("invalid apply on a follower: %v %+v", err, res)
	}

	// nothing was committed: the next valid write takes the next index
	if !stable() {
		return false
	}
	if got := leader.n.raft.LastIndex(); got != last {
		t.Fatalf("leader log grew from %d to %d on refused commands", last, got)
	}
	res, err = follower.n.Apply(ctx, fsm.Command{Type: fsm.CmdMachineCreate,
		Body: fsm.MachineCreate{Machine: fsm.Machine{ID: fmt.Sprintf("after-%d", attempt), AuthType: fsm.AuthPassword}}})
	if err != nil || res.Err() != nil {
		t.Fatalf("valid write after the refusals: %v %+v", err, res)
	}
	if !stable() {
		return false
	}
	if got := leader.n.raft.LastIndex(); got != last+1 {
		t.Fatalf("valid write at index %d, want %d", got, last+1)
	}
	for _, tn := range nodes {
		waitFor(t, tn.id+" applies the valid write", 10*time.Second, func() bool { return tn.n.FSM.Machine(fmt.Sprintf("after-%d", attempt)) != nil })
		if tn.n.FSM.Machine("x") != nil || tn.n.FSM.Machine("evil\nname") != nil {
			t.Errorf("%s: a refused command was applied", tn.id)
		}
	}
	return true
}

func mustEncode(t *testing.T, c fsm.Command) []byte {
	t.Helper()
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An entry that an older leader committed without validation, of a known
// type but undecodable, is skipped by every node the same way — at once
// and again when a node restarts and replays its log — and the cluster
// keeps working.
func TestCommittedMalformedEntryIsSkippedEverywhere(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	waitFor(t, "a leader with 3 voters", 15*time.Second, func() bool {
		l := leaderOf(nodes)
		return l != nil && voters(l.n) == 3
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	good := mustEncode(t, fsm.Command{Type: fsm.CmdMachineCreate, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "m1"}}})
	bad := append(append([]byte(nil), good[:10]...), []byte(`{"machine":{"id":["not","a","string"]}}`)...)
	// what an older leader did: append without decoding (again if an
	// election got in the way)
	var (
		leader *testNode
		res    *fsm.Result
		index  uint64
		err    error
	)
	for range 3 {
		waitFor(t, "a leader", 15*time.Second, func() bool { return leaderOf(nodes) != nil })
		leader = leaderOf(nodes)
		if res, index, err = leader.n.appendLocal(ctx, bad, nil); !errors.Is(err, ErrNotLeader) {
			break
		}
	}
	if err != nil || index == 0 || res.Code != fsm.CodeInvalid {
		t.Fatalf("malformed entry: %v index %d %+v, want committed and skipped (invalid)", err, index, res)
	}
	var follower *testNode
	for _, tn := range nodes {
		if tn != leader {
			follower = tn
		}
	}
	if res, err := follower.n.Apply(ctx, fsm.Command{Type: fsm.CmdMachineCreate, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "m2"}}}); err != nil || res.Err() != nil {
		t.Fatalf("write after the malformed entry: %v %+v", err, res)
	}
	for _, tn := range nodes {
		waitFor(t, tn.id+" applies past the malformed entry", 10*time.Second, func() bool { return tn.n.FSM.Machine("m2") != nil })
	}
	// a restarted node replays the entry from its log and skips it again
	_ = follower.n.Close()
	follower.n = nil
	follower.start(t, leader.gossipAddr, 3, time.Hour)
	waitFor(t, "the restarted node to catch up", 20*time.Second, func() bool {
		return follower.n.FSM.AppliedIndex() >= index && follower.n.FSM.Machine("m2") != nil
	})
	if follower.n.FSM.Machine("m1") != nil {
		t.Fatal("the malformed entry was applied")
	}
}
