package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// ErrNotLeader is returned by Apply when this node cannot accept writes.
var ErrNotLeader = errors.New("no raft leader is reachable from this node")

// Config configures a node.
type Config struct {
	NodeID  string
	DataDir string
	// RaftAddr is the TCP address raft listens on; empty for a
	// single-node cluster with an in-process transport.
	RaftAddr string
	Logger   *slog.Logger
	// ApplyTimeout bounds one write.
	ApplyTimeout time.Duration
	// LeaderWait is how long a write waits for an election to finish
	// before it is refused.
	LeaderWait time.Duration
}

// Node is one raft member holding the FSM.
type Node struct {
	cfg       Config
	FSM       *fsm.FSM
	raft      *raft.Raft
	transport raft.Transport
	closers   []io.Closer
	log       *slog.Logger

	mu        sync.Mutex
	observers []func(isLeader bool)
	// leading is true between a barrier-confirmed election and the loss
	// of leadership; late observers are told at once.
	leading bool
}

// Open starts raft on the data dir. A fresh data dir with no peers
// bootstraps a single-node cluster; an existing one resumes.
func Open(cfg Config, f *fsm.FSM) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.LeaderWait == 0 {
		cfg.LeaderWait = 3 * time.Second
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node1"
	}
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, FSM: f, log: cfg.Logger}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	// LAN-tuned timeouts: a lost leader is replaced within about a second.
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = 8192
	rc.SnapshotInterval = 30 * time.Second
	rc.TrailingLogs = 10240
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})

	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	n.closers = append(n.closers, store)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, rc.Logger)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}

	var addr raft.ServerAddress
	if cfg.RaftAddr == "" {
		addr = raft.ServerAddress("local-" + cfg.NodeID)
		_, t := raft.NewInmemTransport(addr)
		n.transport = t
	} else {
		tcpAddr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if err != nil {
			return nil, err
		}
		t, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, tcpAddr, 5, 10*time.Second, rc.Logger)
		if err != nil {
			return nil, fmt.Errorf("raft transport: %w", err)
		}
		n.transport = t
		addr = t.LocalAddr()
	}

	hasState, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return nil, err
	}
	r, err := raft.NewRaft(rc, f, store, store, snaps, n.transport)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	if !hasState {
		cfgn := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr, Suffrage: raft.Voter}}}
		if err := r.BootstrapCluster(cfgn).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
	}
	go n.watchLeadership()
	return n, nil
}

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

func (n *Node) watchLeadership() {
	for isLeader := range n.raft.LeaderCh() {
		if isLeader {
			if err := n.raft.Barrier(n.cfg.ApplyTimeout).Error(); err != nil {
				n.log.Warn("barrier after election failed", "err", err)
				continue
			}
		}
		n.mu.Lock()
		n.leading = isLeader
		obs := append([]func(bool){}, n.observers...)
		n.mu.Unlock()
		for _, fn := range obs {
			fn(isLeader)
		}
	}
}

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// WaitLeader blocks until the cluster has a leader or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if addr, _ := n.raft.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// waitLeading waits until this node leads (barrier done) or d passes.
func (n *Node) waitLeading(ctx context.Context, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		n.mu.Lock()
		leading := n.leading
		n.mu.Unlock()
		if leading && n.raft.State() == raft.Leader {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Apply submits a command, waits until it is committed and applied on
// this node, and returns its result.
func (n *Node) Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error) {
	if n.raft.State() != raft.Leader {
		// An election may be under way: wait a little rather than fail.
		if err := n.waitLeading(ctx, n.cfg.LeaderWait); err != nil {
			return nil, ErrNotLeader
		}
	}
	c.Time = time.Now().UnixNano()
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < timeout {
			timeout = d
		}
	}
	fut := n.raft.Apply(data, timeout)
	if err := fut.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, ErrNotLeader
		}
		return nil, err
	}
	if err := n.FSM.WaitForIndex(ctx, fut.Index()); err != nil {
		return nil, err
	}
	res, _ := fut.Response().(*fsm.Result)
	if res == nil {
		res = &fsm.Result{}
	}
	return res, nil
}

// Status is a point-in-time view of the node.
type Status struct {
	NodeID       string `json:"node_id"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	Term         string `json:"term"`
	CommitIndex  string `json:"commit_index"`
	AppliedIndex string `json:"applied_index"`
	LastLogIndex string `json:"last_log_index"`
	NumPeers     string `json:"num_peers"`
}

// Status returns raft statistics.
func (n *Node) Status() Status {
	st := n.raft.Stats()
	_, leader := n.raft.LeaderWithID()
	return Status{NodeID: n.cfg.NodeID, State: n.raft.State().String(), Leader: string(leader),
		Term: st["term"], CommitIndex: st["commit_index"], AppliedIndex: st["applied_index"],
		LastLogIndex: st["last_log_index"], NumPeers: st["num_peers"]}
}

// Snapshot forces a raft snapshot (tests, operators).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Close stops raft and releases the stores.
func (n *Node) Close() error {
	err := n.raft.Shutdown().Error()
	if c, ok := n.transport.(io.Closer); ok {
		_ = c.Close()
	}
	for _, c := range n.closers {
		_ = c.Close()
	}
	return err
}
