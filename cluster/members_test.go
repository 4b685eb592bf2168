package cluster

import (
	"bytes"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

// holdHalfApplied is how long a step stays applied on one node only:
// longer than memberlist needs to mark an unreachable member suspect and
// then dead with halapi's LAN settings, so a wrong order is caught.
var holdHalfApplied = 2500 * time.Millisecond

// TestGossipKeyRotationKeepsMembers rotates the gossip key in the three
// steps `cluster remove` uses, applied on each node at a different moment,
// and checks that no node ever loses sight of the other, that each
// announces the generation it applied, and that the old key is gone.
func TestGossipKeyRotationKeepsMembers(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 32)
	var nodes []*Node
	first := ""
	for i, id := range []string{"a", "b"} {
		gossipAddr := freeUDPTCPPort(t)
		if i == 0 {
			first = gossipAddr
		}
		n, err := Open(Config{NodeID: id, DataDir: t.TempDir(), RaftAddr: freePort(t), GossipAddr: gossipAddr,
			Join: []string{first}, BootstrapExpect: 2, GossipKey: k1}, fsm.New(nil))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}
	bothAlive := func() bool {
		for _, n := range nodes {
			if g := n.GossipKeyGens(); len(g) != 2 {
				return false
			}
		}
		return true
	}
	waitFor(t, "both nodes alive in gossip", 10*time.Second, bothAlive)

	steps := []struct {
		primary []byte
		keys    [][]byte
	}{
		{k1, [][]byte{k1, k2}}, // install
		{k2, [][]byte{k1, k2}}, // switch
		{k2, [][]byte{k2}},     // remove
	}
	if testing.Short() {
		holdHalfApplied = 300 * time.Millisecond
	}
	for i, s := range steps {
		gen := uint64(i + 1)
		for _, n := range nodes {
			if err := n.SetGossipKeys(gen, s.primary, s.keys); err != nil {
				t.Fatalf("step %d: %v", gen, err)
			}
			// The other node is one step behind for a moment: gossip
			// must keep flowing both ways.
			time.Sleep(holdHalfApplied)
			if !bothAlive() {
				t.Fatalf("step %d: a node lost the other while the steps were half applied", gen)
			}
		}
		waitFor(t, "both nodes announce the generation", 5*time.Second, func() bool {
			for _, n := range nodes {
				for id, g := range n.GossipKeyGens() {
					if g != gen {
						t.Logf("%s sees %s at generation %d", n.cfg.NodeID, id, g)
						return false
					}
				}
			}
			return true
		})
	}
	for _, n := range nodes {
		keys := n.gossip.keyring.GetKeys()
		if len(keys) != 1 || !bytes.Equal(keys[0], k2) {
			t.Fatalf("%s keeps %d keys after the rotation", n.cfg.NodeID, len(keys))
		}
	}
}
