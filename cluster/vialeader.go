package cluster

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Operations that only the leader may carry out (a write, a removal) go
// through viaLeader: run locally when this node leads, sent to the leader
// over the cluster port when another node does, and retried while no
// leader takes them, for up to Config.LeaderWait.
//
// A forwarded operation is abandoned as soon as this node's raft sees the
// leader it was sent to replaced (or lost): a leader that hangs (a stopped
// process, a stalled host) accepts the connection and never answers, and
// the follower would otherwise wait its whole apply timeout although a
// successor is elected within about a second. The retry on the new leader
// is safe: a write carries one request ID for every attempt, and the FSM
// answers a repeated ID with the first result instead of applying it again.

// leaderRetryEvery is the pause between two attempts while no leader
// takes an operation.
const leaderRetryEvery = 25 * time.Millisecond

// errLeaderChanged: a forwarded operation was abandoned because the
// leader changed while it was in flight.
var errLeaderChanged = errors.New("the leader changed while the operation was in flight")

// viaLeader runs local (this node leads) or remote (another node leads, at
// addr) until one of them returns something other than ErrNotLeader, which
// means "no leader took it, try again". It gives up with ErrNotLeader when
// no leader took the operation for LeaderWait (counted again from each
// leader change seen during a forward: an election has started), or when
// ctx ends.
func (n *Node) viaLeader(ctx context.Context, local func(context.Context) error, remote func(ctx context.Context, addr string) error) error {
	waitUntil := time.Now().Add(n.cfg.LeaderWait)
	for {
		err := ErrNotLeader
		changed := n.leaders.changed()
		if n.raft.State() == raft.Leader {
			err = local(ctx)
		} else if addr, id := n.raft.LeaderWithID(); addr != "" && id != raft.ServerID(n.cfg.NodeID) && n.mux != nil {
			err = n.forward(ctx, id, changed, func(ctx context.Context) error { return remote(ctx, string(addr)) })
			if errors.Is(err, errLeaderChanged) {
				n.metrics.forwardsAbandoned.Inc()
				n.log.Debug("leader changed during a forwarded operation, retrying", "old_leader", id)
				waitUntil = time.Now().Add(n.cfg.LeaderWait)
				err = ErrNotLeader
			}
		}
		if !errors.Is(err, ErrNotLeader) {
			return err
		}
		if time.Now().After(waitUntil) || ctx.Err() != nil {
			return ErrNotLeader
		}
		select {
		case <-ctx.Done():
			return ErrNotLeader
		case <-changed:
		case <-time.After(leaderRetryEvery):
		}
	}
}

// forward runs call (a request to leader id) and cancels it when this
// node's raft sees another leader, or none, before it returns: the result
// is then errLeaderChanged unless call succeeded anyway. changed is the
// leader-change channel taken before id was read.
func (n *Node) forward(ctx context.Context, id raft.ServerID, changed <-chan struct{}, call func(context.Context) error) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var moved atomic.Bool
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-cctx.Done():
				return
			case <-changed:
			}
			changed = n.leaders.changed()
			if _, cur := n.raft.LeaderWithID(); cur == id {
				continue // changed and changed back
			}
			moved.Store(true)
			cancel()
			return
		}
	}()
	err := call(cctx)
	if err != nil && moved.Load() && ctx.Err() == nil {
		return errLeaderChanged
	}
	return err
}

// leaderWatch tells waiters that raft's view of the leader changed on
// this node: changed() returns a channel closed at the next change.
type leaderWatch struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *leaderWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *leaderWatch) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// watchLeaderChanges feeds n.leaders from raft's leader observations
// until the node stops.
func (n *Node) watchLeaderChanges() {
	defer n.wg.Done()
	ch := make(chan raft.Observation, 16)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	for {
		select {
		case <-n.stop:
			return
		case <-ch:
			n.leaders.notify()
		}
	}
}

// WaitLeader blocks until the cluster has a leader or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	for {
		changed := n.leaders.changed()
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-time.After(leaderRetryEvery):
		}
	}
}
