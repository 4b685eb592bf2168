package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Freshness: reads are local, so a follower may refuse a client on a copy
// a few milliseconds older than a write another node has already
// acknowledged (a bouncer added on node A, its key used on node B at
// once). Before refusing, the LAPI calls SyncLeader: this node asks the
// leader for its commit index (rpcCommitIndex) and waits until its own FSM
// has applied that index, then re-checks. Rounds are coalesced: every
// caller waits for one round trip that started after it called, all the
// callers waiting for the next round share it, and rounds start at least
// freshInterval apart, so a flood of refusals costs at most one leader
// round trip per interval.
//
// WaitReplicated is the other half: an admin write that changes who may
// authenticate returns only once every reachable member has applied it.

const (
	// rpcCommitIndex asks the leader for its commit index (precisely: the
	// last command entry at or below it, see commandTarget); payload: none.
	// Answer: Index, or NotLeader. An older leader answers "unknown rpc",
	// which the caller treats like no leader (answer from local state).
	rpcCommitIndex byte = 5

	freshInterval = 100 * time.Millisecond
	// freshTimeout bounds one round (leader round trip and local catch-up).
	freshTimeout = 2 * time.Second
)

// ErrNoLeaderKnown is returned by SyncLeader when no leader is known or
// it cannot be asked: the caller answers from its local state.
var ErrNoLeaderKnown = errors.New("no leader to confirm against")

type freshRound struct {
	done chan struct{}
	err  error
}

type freshness struct {
	mu      sync.Mutex
	pending *freshRound // collects callers for the next round
	running bool        // a goroutine is running rounds
	last    time.Time   // start of the previous round
}

// SyncLeader returns once this node has applied everything the leader had
// committed at some moment after the call started, or ErrNoLeaderKnown,
// or ctx's error.
func (n *Node) SyncLeader(ctx context.Context) error {
	n.metrics.freshChecks.Inc()
	if n.raft.State() == raft.Leader {
		// no round trip: wait for this node's own commit index
		return n.FSM.WaitForIndex(ctx, n.commandTarget())
	}
	f := &n.fresh
	f.mu.Lock()
	if f.pending == nil {
		f.pending = &freshRound{done: make(chan struct{})}
	}
	r := f.pending
	if !f.running {
		f.running = true
		go n.freshLoop()
	}
	f.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// freshLoop runs rounds while callers wait for one.
func (n *Node) freshLoop() {
	f := &n.fresh
	for {
		f.mu.Lock()
		wait := time.Until(f.last.Add(freshInterval))
		f.mu.Unlock()
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-n.stop:
			}
		}
		f.mu.Lock()
		r := f.pending
		f.pending = nil
		if r == nil {
			f.running = false
			f.mu.Unlock()
			return
		}
		f.last = time.Now()
		f.mu.Unlock()
		r.err = n.freshRound()
		close(r.done)
	}
}

func (n *Node) freshRound() error {
	select {
	case <-n.stop:
		return errStopping
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), freshTimeout)
	defer cancel()
	var index uint64
	if n.raft.State() == raft.Leader {
		index = n.commandTarget()
	} else {
		addr, id := n.raft.LeaderWithID()
		if addr == "" || id == raft.ServerID(n.cfg.NodeID) || n.mux == nil {
			return ErrNoLeaderKnown
		}
		n.metrics.freshRPCs.Inc()
		resp, err := n.rpc.call(ctx, string(addr), rpcCommitIndex, nil)
		if err != nil || resp.NotLeader || resp.Fail != "" {
			return ErrNoLeaderKnown
		}
		index = resp.Index
	}
	return n.FSM.WaitForIndex(ctx, index)
}

// commitIndexRPC answers rpcCommitIndex.
func (n *Node) commitIndexRPC() *rpcResponse {
	if n.raft.State() != raft.Leader {
		return &rpcResponse{NotLeader: true}
	}
	return &rpcResponse{Index: n.commandTarget()}
}

// commandTarget is the index of the last command entry at or below the
// commit index: what a node must have applied to have seen every
// committed write. The FSM only sees command (and configuration) entries,
// so its applied index never reaches a commit index that ends with a
// no-op or a barrier (a new leader's first entries) until the next write.
func (n *Node) commandTarget() uint64 {
	if idx, ok := lastCommandAtOrBelow(n.logs, n.raft.CommitIndex()); ok {
		return idx
	}
	// not found nearby (compacted, or a long run of non-commands): what
	// this node's FSM has applied is the best lower bound it knows
	return n.FSM.AppliedIndex()
}

// lastCommandAtOrBelow walks down at most 64 entries from idx to the last
// command entry. Each entry is read into a fresh raft.Log: a Log filled
// from raft's LogCache shares its Data with the cached entry, and the
// BoltDB store decodes the next entry's bytes into the Data buffer it is
// given when it is large enough — reusing one Log overwrote a cached
// entry (a configuration entry replaced by a Touch command, sent to a
// joining node, which panicked decoding it).
func lastCommandAtOrBelow(logs raft.LogStore, idx uint64) (uint64, bool) {
	for range 64 {
		if idx == 0 {
			return 0, true
		}
		var l raft.Log
		if err := logs.GetLog(idx, &l); err != nil {
			return 0, false
		}
		if l.Type == raft.LogCommand {
			return idx, true
		}
		idx--
	}
	return 0, false
}

// WaitReplicated waits until every reachable member has applied index:
// members gossip reports gone, members whose status cannot be read, and
// nodes not yet in the raft configuration are not waited for (mustWaitFor).
// Bounded by ctx (whose error it returns when some member is still
// behind).
// mustWaitFor reports whether WaitReplicated still waits for m to apply
// index. A member gossip has not confirmed alive (suspect under load, or
// not yet heard of) whose status was read is waited for like any other:
// only gossip's verdict that it is gone, or a status that cannot be read,
// lets a write go on without it.
func mustWaitFor(m Member, index uint64) bool {
	return !MemberState(m.State).Gone() && m.Role != string(RoleJoining) && m.Error == "" && m.AppliedIndex < index
}

func (n *Node) WaitReplicated(ctx context.Context, index uint64) error {
	if n.mux == nil {
		return nil // single node, in-process transport
	}
	for {
		done := true
		for _, m := range n.Status(ctx).Members {
			if mustWaitFor(m, index) {
				done = false
				break
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
