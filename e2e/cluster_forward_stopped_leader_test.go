package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// stoppedLeaderWriteBound bounds a write sent to a follower while the
// leader is hung (SIGSTOP). What it has to cover, with the default raft
// timing (650 ms): the follower noticing the silent leader (heartbeat
// timeout, randomised up to 2 × 650 ms = 1.3 s), an election (pre-vote and
// vote; a split vote costs another randomised round, up to 1.3 s each:
// 2.6 s for two), then the forward to the new leader and its commit
// (milliseconds): about 4 s in a bad case on a loaded host. Before the
// fix the follower held the forward for its whole 10 s apply timeout,
// answered 503, and the apiclient slept 20 s before retrying.
const stoppedLeaderWriteBound = 5 * time.Second

// TestForwardToStoppedLeaderRetriesOnNewLeader: the leader is SIGSTOPped
// (its kernel still accepts connections, nothing answers), and an agent
// pushes an alert through a follower at once, while that follower still
// believes in the old leader. The follower abandons the forward when its
// raft sees the leader replaced, sends it to the new leader, and answers
// within stoppedLeaderWriteBound. After SIGCONT (the old leader may hold
// the first attempt in its log; it steps down and drops it), every node
// stores the alert once: the retry carried the same request ID.
func TestForwardToStoppedLeaderRetriesOnNewLeader(t *testing.T) {
	const password = "e2e-forward-stopped-leader-password-0123"
	c := StartCluster(t, 3, 180)
	leader := c.Leader(c.Node(1))
	follower := c.Others(leader)[0]
	follower.MustCLI("machines", "add", "fwd-agent", "--password", password)
	c.WaitCaughtUp(c.Nodes...)

	w := newWatcher(t, follower.Server, "fwd-agent", password)
	// Log in (and write its login details) before the fault, so the push
	// below is the only write that meets the hung leader.
	listAlerts(t, w, nil)

	if err := leader.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := leader.Signal(syscall.SIGCONT); err != nil {
				t.Errorf("SIGCONT: %v", err)
			}
		}
	}
	t.Cleanup(resume)

	const ip = "198.51.100.77"
	start := time.Now()
	// Bounded above the bound (the apiclient sleeps 20 s before retrying a
	// 503): an answer later than the bound fails below with its time.
	ctx, cancel := context.WithTimeout(context.Background(), 3*stoppedLeaderWriteBound)
	resp, _, err := w.Alerts.Add(ctx, models.AddAlertsRequest{agentAlert(ip, "crowdsecurity/ssh-bf", 6)})
	cancel()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("alert push through follower %s with leader %s stopped: %v after %v", follower.ID, leader.ID, err, took.Round(time.Millisecond))
	}
	if resp == nil || len(*resp) != 1 {
		t.Fatalf("alert push answered %v", resp)
	}
	t.Logf("alert pushed through %s in %v with the leader %s stopped", follower.ID, took.Round(time.Millisecond), leader.ID)
	if took > stoppedLeaderWriteBound {
		t.Errorf("the write took %v with the leader stopped, want < %v", took.Round(time.Millisecond), stoppedLeaderWriteBound)
	}
	st := follower.MustStatus()
	if st.Leader == "" || st.Leader == leader.ID {
		t.Errorf("follower %s names leader %q after the write, want a new one: %s", follower.ID, st.Leader, st)
	}

	resume()
	c.WaitCaughtUp(c.Nodes...)
	for _, nd := range c.Nodes {
		got := listAlerts(t, newWatcher(t, nd.Server, "fwd-agent", password), func(o *apiclient.AlertsListOpts) { o.IPEquals = ip })
		if len(got) != 1 {
			t.Errorf("node %s stores %d alerts for %s, want 1: ids %v", nd.ID, len(got), ip, alertIDs(got))
		}
	}
}
