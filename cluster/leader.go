package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// LeaderJob is work that runs only while this node is the raft leader
// (Consul's leaderLoop model). Each job gets its own context per term,
// cancelled as soon as leadership is lost or the node closes.
//
// Restart policy: Run returning nil means "done for this term" (a one-shot
// job such as creating a missing secret); Run returning an error, or
// panicking (the panic is logged with its stack), is restarted after a
// backoff that doubles from MinBackoff up to MaxBackoff. A run that lasted
// longer than MaxBackoff resets the backoff.
type LeaderJob struct {
	Name       string
	Run        func(ctx context.Context) error
	MinBackoff time.Duration // default 500 ms
	MaxBackoff time.Duration // default 30 s
}

// leaderRunner holds the registered leader jobs and runs one leadership
// term at a time: barrier (retried until it succeeds or the term ends),
// then every job, then, at the end of the term, cancellation of them all.
type leaderRunner struct {
	log *slog.Logger
	// barrier waits until the FSM holds every committed entry.
	barrier func(ctx context.Context) error
	// gained and lost are called around a term's jobs (observers, metrics).
	gained, lost func()
	// barrierRetry bounds the pause between two barrier attempts.
	barrierMin, barrierMax time.Duration

	mu   sync.Mutex
	jobs []LeaderJob
	term *leaderTerm // non-nil while jobs run
}

type leaderTerm struct {
	ctx context.Context
	wg  sync.WaitGroup
}

func (lr *leaderRunner) add(j LeaderJob) {
	if j.MinBackoff <= 0 {
		j.MinBackoff = 500 * time.Millisecond
	}
	if j.MaxBackoff < j.MinBackoff {
		j.MaxBackoff = 30 * time.Second
		if j.MaxBackoff < j.MinBackoff {
			j.MaxBackoff = j.MinBackoff
		}
	}
	lr.mu.Lock()
	defer lr.mu.Unlock()
	lr.jobs = append(lr.jobs, j)
	if t := lr.term; t != nil {
		t.wg.Add(1)
		go lr.runJob(t, j)
	}
}

// lead runs one term; it returns after stop is closed and every job of the
// term has returned (a job ignoring its context is waited for at most 10 s,
// then left behind with an error log).
func (lr *leaderRunner) lead(stop <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-stop
		cancel()
	}()
	wait := lr.barrierMin
	for attempt := 1; ; attempt++ {
		err := lr.barrier(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		lr.log.Warn("barrier after election failed, retrying", "attempt", attempt, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if wait *= 2; wait > lr.barrierMax {
			wait = lr.barrierMax
		}
	}
	lr.log.Info("this node is the raft leader")
	if lr.gained != nil {
		lr.gained()
	}
	t := &leaderTerm{ctx: ctx}
	lr.mu.Lock()
	lr.term = t
	for _, j := range lr.jobs {
		t.wg.Add(1)
		go lr.runJob(t, j)
	}
	lr.mu.Unlock()

	<-ctx.Done()
	lr.mu.Lock()
	lr.term = nil
	lr.mu.Unlock()
	if lr.lost != nil {
		lr.lost()
	}
	done := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		lr.log.Error("a leader job did not stop within 10 s of losing leadership")
	}
}

func (lr *leaderRunner) runJob(t *leaderTerm, j LeaderJob) {
	defer t.wg.Done()
	wait := j.MinBackoff
	for t.ctx.Err() == nil {
		start := time.Now()
		err := lr.safeRun(t.ctx, j)
		if t.ctx.Err() != nil {
			return
		}
		if err == nil {
			return
		}
		if time.Since(start) > j.MaxBackoff {
			wait = j.MinBackoff
		}
		lr.log.Warn("leader job failed, restarting", "job", j.Name, "retry_in", wait, "err", err)
		select {
		case <-t.ctx.Done():
			return
		case <-time.After(wait):
		}
		if wait *= 2; wait > j.MaxBackoff {
			wait = j.MaxBackoff
		}
	}
}

func (lr *leaderRunner) safeRun(ctx context.Context, j LeaderJob) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
			lr.log.Error("leader job panicked", "job", j.Name, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
	}()
	return j.Run(ctx)
}

// MemberAlive reports whether id names this node or a member gossip sees
// alive (or suspect): such an id is in use.
func (n *Node) MemberAlive(id string) bool {
	if id == n.cfg.NodeID {
		return true
	}
	if n.gossip == nil {
		return false
	}
	for _, m := range n.gossip.snapshot() {
		if m.ID == id && m.State.Reachable() {
			return true
		}
	}
	return false
}

// ErrUnsupportedCommand is returned by Apply for a command type that some
// voter does not advertise yet (a rolling upgrade is not finished).
var ErrUnsupportedCommand = errors.New("command type not supported by every voter")

// Supports reports whether this node may append a command of type t now:
// it is in the baseline, or this node and every voter advertise it (a
// writer with a fallback checks this first, capi's compact list imports).
func (n *Node) Supports(t fsm.CmdType) bool { return n.checkSupported(t) == nil }

// checkSupported refuses a command type outside the baseline unless this
// node and every voter in the raft configuration advertise it.
func (n *Node) checkSupported(t fsm.CmdType) error {
	if fsm.Baseline(t) {
		return nil
	}
	if !fsm.Supported(t) {
		return fmt.Errorf("%w: this node does not know command type %d", ErrUnsupportedCommand, t)
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	var voters []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			voters = append(voters, string(s.ID))
		}
	}
	metas := map[string]memberMeta{}
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			metas[m.ID] = m.Meta
		}
	}
	if missing := lackingVoters(t, n.cfg.NodeID, voters, metas); len(missing) > 0 {
		return fmt.Errorf("%w: command type %d needs every voter upgraded; %s do(es) not support it yet", ErrUnsupportedCommand, t, strings.Join(missing, ", "))
	}
	return nil
}

// lackingVoters lists the voters other than self whose advertised
// extensions (as gossip last saw them) do not include t; a voter gossip
// does not know is counted as lacking.
func lackingVoters(t fsm.CmdType, self string, voters []string, metas map[string]memberMeta) []string {
	var out []string
	for _, id := range voters {
		if id == self {
			continue
		}
		m, ok := metas[id]
		if !ok || !slices.Contains(m.Ext, uint8(t)) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// How raft leadership reaches the leader loop and the observers.

// OnLeadership registers fn to be called (from one goroutine, in order)
// whenever this node gains or loses leadership. On gain it is called only
// after a barrier, so the FSM holds every committed entry.
func (n *Node) OnLeadership(fn func(isLeader bool)) {
	n.mu.Lock()
	n.observers = append(n.observers, fn)
	leading := n.leading
	n.mu.Unlock()
	if leading {
		go fn(true)
	}
}

// AddLeaderJob registers a job run on every leadership term of this node
// (after the post-election barrier), see LeaderJob. Jobs may be added at
// any time; one added while this node leads starts at once.
func (n *Node) AddLeaderJob(j LeaderJob) { n.leader.add(j) }

// watchLeadership follows raft's leadership notifications and runs the
// leader loop (n.leader.lead) for each term, stopping it at once when
// leadership is lost.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	ch := n.raft.LeaderCh()
	var stopTerm, termDone chan struct{}
	endTerm := func() {
		if stopTerm != nil {
			close(stopTerm)
			<-termDone
			stopTerm = nil
		}
	}
	for {
		select {
		case <-n.stop:
			endTerm()
			return
		case isLeader := <-ch:
			if !isLeader {
				endTerm()
				continue
			}
			if stopTerm != nil {
				continue
			}
			stopTerm, termDone = make(chan struct{}), make(chan struct{})
			go func(stop, done chan struct{}) {
				defer close(done)
				n.leader.lead(stop)
			}(stopTerm, termDone)
		}
	}
}

func (n *Node) setLeading(isLeader bool) {
	n.mu.Lock()
	n.leading = isLeader
	obs := append([]func(bool){}, n.observers...)
	n.mu.Unlock()
	n.metrics.setLeader(isLeader)
	for _, fn := range obs {
		fn(isLeader)
	}
	if n.gossip != nil {
		n.gossip.kick()
	}
}
