package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

func openNode(t *testing.T, dir string) *Node {
	t.Helper()
	n, err := Open(Config{NodeID: "n1", DataDir: dir}, fsm.New(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for !n.IsLeader() {
		select {
		case <-ctx.Done():
			t.Fatal("never became leader")
		case <-time.After(10 * time.Millisecond):
		}
	}
	return n
}

func createMachine(t *testing.T, n *Node, id string) {
	t.Helper()
	res, err := n.Apply(context.Background(), fsm.Command{Type: fsm.CmdMachineCreate,
		Body: fsm.MachineCreate{Machine: fsm.Machine{ID: id, AuthType: fsm.AuthPassword}}})
	if err != nil || res.Err() != nil {
		t.Fatalf("apply: %v %v", err, res)
	}
}

// A node restarted on its data dir replays its log (and snapshot) and keeps
// every acknowledged write; the write is visible locally when Apply returns.
func TestRestartKeepsStateFromLogAndSnapshot(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	createMachine(t, n, "a")
	if n.FSM.Machine("a") == nil {
		t.Fatal("write not visible after Apply returned")
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	createMachine(t, n, "b") // after the snapshot: only in the log
	before := n.FSM.Machine("a").CreatedAt
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := openNode(t, dir)
	defer n2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// the leader commits a no-op on election; wait for everything to be applied
	for n2.FSM.Machine("b") == nil {
		select {
		case <-ctx.Done():
			t.Fatal("machine b not restored")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if m := n2.FSM.Machine("a"); m == nil || m.CreatedAt != before {
		t.Fatalf("machine a after restart: %+v", m)
	}
	createMachine(t, n2, "c")
	if n2.FSM.Machine("c") == nil {
		t.Fatal("write after restart failed")
	}
	st := n2.Status(context.Background())
	if st.State != "Leader" || st.Leader != "n1" {
		t.Fatalf("status %+v", st)
	}
}

func TestApplyStampsLeaderTime(t *testing.T) {
	n := openNode(t, t.TempDir())
	defer n.Close()
	before := time.Now().UnixNano()
	createMachine(t, n, "x")
	after := time.Now().UnixNano()
	if c := n.FSM.Machine("x").CreatedAt; c < before || c > after {
		t.Fatalf("created_at %d not within [%d, %d]", c, before, after)
	}
}
