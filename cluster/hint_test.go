package cluster

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/internal/testutil"
)

// A follower decodes its own forwarded writes while the leader handles
// them, and its apply — which each write waits for — takes that decode;
// the leader and the other follower decode the entries as usual, no hint
// outlives its write, small writes get none, and every node ends with the
// same machines.
func TestForwardedWritesTakenFromTheFollowersDecode(t *testing.T) {
	nodes := startCluster(t, 3, time.Hour)
	leader, followers := formed(t, nodes)
	f, other := followers[0].n, followers[1].n
	scenarios := strings.Repeat("crowdsecurity/ssh-bf,", 250) // over hintMin once encoded
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("big-%d-%d", w, i)
				res, err := f.Apply(context.Background(), fsm.Command{Type: fsm.CmdMachineCreate,
					Body: fsm.MachineCreate{Machine: fsm.Machine{ID: id, AuthType: fsm.AuthPassword, Scenarios: scenarios}}})
				if err == nil {
					err = res.Err()
				}
				if m := f.FSM.Machine(id); err == nil && (m == nil || m.Scenarios != scenarios) {
					err = fmt.Errorf("%s not readable as written after its write returned", id)
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
	taken, pending := f.FSM.ForwardHints()
	t.Logf("the forwarding follower took %d of %d writes from its own decode", taken, writers*each)
	// a hint registered after its entry was applied (a slow goroutine) is
	// not taken: the count may fall short, never exceed
	if taken == 0 || taken > writers*each || pending != 0 {
		t.Fatalf("forwarding follower: %d hints taken (want 1..%d), %d left (want 0)", taken, writers*each, pending)
	}
	for _, n := range []*Node{leader.n, other} {
		if taken, pending := n.FSM.ForwardHints(); taken != 0 || pending != 0 {
			t.Fatalf("%s: %d hints taken, %d held; want none", n.cfg.NodeID, taken, pending)
		}
	}
	// the writers ran concurrently, so no single machine is the last one
	// applied: wait for all of them on the other follower
	testutil.WaitFor(t, 10*time.Second, "the other follower applies every write", func() bool {
		for w := range writers {
			for i := range each {
				if other.FSM.Machine(fmt.Sprintf("big-%d-%d", w, i)) == nil {
					return false
				}
			}
		}
		return true
	})
	for w := range writers {
		for i := range each {
			id := fmt.Sprintf("big-%d-%d", w, i)
			for _, n := range []*Node{leader.n, other} {
				if m := n.FSM.Machine(id); m == nil || m.Scenarios != scenarios {
					t.Fatalf("%s: machine %s differs from the forwarding follower's", n.cfg.NodeID, id)
				}
			}
		}
	}

	// small writes are decoded when applied
	writeMachines(t, f, "small", 2, 5)
	if again, pending := f.FSM.ForwardHints(); again != taken || pending != 0 {
		t.Fatalf("small writes: %d hints taken (was %d), %d held", again, taken, pending)
	}
}
