package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// raftLogCacheEntries is how many of the newest raft entries stay in memory.
const raftLogCacheEntries = 16

// ErrNotLeader is returned by Apply when no leader can take the write.
var ErrNotLeader = errors.New("no raft leader is reachable from this node")

// Config configures a node.
type Config struct {
	NodeID  string
	DataDir string
	// RaftAddr is the cluster port (raft + internal RPC). Empty: a
	// single-node cluster on an in-process transport, no gossip.
	RaftAddr string
	// RaftAdvertise is the address peers dial to reach the cluster port
	// (default: RaftAddr). Outgoing cluster connections are made from the
	// host of RaftAddr, so a proxy in between sees which node is calling.
	RaftAdvertise string
	// GossipAddr is the memberlist bind address (needed with RaftAddr for
	// a multi-node cluster).
	GossipAddr string
	// WrapServer and WrapClient secure cluster-port connections (mTLS with
	// node certificates); nil = plain TCP (loopback test clusters).
	WrapServer, WrapClient func(net.Conn) net.Conn
	// GossipKey encrypts gossip (16, 24 or 32 bytes); nil = clear text.
	GossipKey []byte
	// VerifyPeer (secure clusters) checks the certificate chain a member
	// presents on its cluster port before the leader makes it a voter;
	// NodeRevoked reports a node whose node certificates are revoked (the
	// leader removes such a voter). nil: any live gossip member becomes a
	// voter (--insecure-cluster). See members.go.
	VerifyPeer  func(nodeID string, chain []*x509.Certificate) error
	NodeRevoked func(nodeID string) bool
	// Join lists gossip addresses of existing members.
	Join []string
	// BootstrapExpect: bootstrap once this many servers have met (and no
	// cluster exists yet). 0 with no Join: bootstrap alone.
	BootstrapExpect int
	// APIURL is this node's client API URL (serve --api-advertise, else
	// from --listen), gossiped to the members: cluster status and the
	// member list halapi agent reads.
	APIURL string
	// DeadNodeTimeout: a member gone (dead or left) longer than this is
	// removed from raft by the leader, only while a quorum remains.
	DeadNodeTimeout time.Duration
	Logger          *slog.Logger
	// ApplyTimeout bounds one write.
	ApplyTimeout time.Duration
	// SnapshotThreshold and TrailingLogs tune raft snapshots (0 = defaults:
	// 8192 entries between snapshots, 10240 entries kept after one).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// LeaderWait is how long a write waits for an election to finish
	// before it is refused.
	LeaderWait time.Duration
	// Raft timing (0 = the defaults below). HeartbeatTimeout is how long
	// a follower waits without contact before it calls an election
	// (randomised up to twice that); ElectionTimeout the same for a
	// candidate; LeaderLeaseTimeout how long a leader keeps leading without
	// contact with a quorum (at most HeartbeatTimeout); CommitTimeout the
	// longest a follower waits to learn a commit when nothing else is sent.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
}

// Raft timing defaults: robust on a loaded 2-core host (the lease equals
// the heartbeat timeout, so a leader does not step down over a scheduling
// hiccup a follower would forgive), while a lost leader is still replaced
// within about 1-1.6 s (pre-vote keeps a lagging node from disrupting).
const (
	DefaultHeartbeatTimeout   = 650 * time.Millisecond
	DefaultElectionTimeout    = 650 * time.Millisecond
	DefaultLeaderLeaseTimeout = 650 * time.Millisecond
	DefaultCommitTimeout      = 5 * time.Millisecond
)

// Node is one raft member holding the FSM.
type Node struct {
	cfg       Config
	FSM       *fsm.FSM
	raft      *raft.Raft
	transport raft.Transport
	mux       *muxListener
	gossip    *gossip
	rpc       rpcClient
	closers   []io.Closer
	profInfo  atomic.Pointer[func() ProfilesInfo] // profilesinfo.go
	log       *slog.Logger
	started   int64
	hasState  atomic.Bool
	closing   atomic.Bool
	left      atomic.Bool
	// reconciles counts the leader's membership rounds (tests wait on it).
	reconciles atomic.Int64
	metrics    *nodeMetrics
	fresh      freshness
	// leaders signals changes of raft's view of the leader (vialeader.go).
	leaders leaderWatch
	logs    raft.LogStore
	combine combiner // forwards waiting for the leader (combine.go)
	// refuseApplyMany (tests) answers rpcApplyMany as a leader older than
	// it does: "unknown rpc".
	refuseApplyMany atomic.Bool
	snaps           raft.SnapshotStore // backups (backup.go)
	stop            chan struct{}
	wg              sync.WaitGroup

	mu        sync.Mutex
	observers []func(isLeader bool)
	// leading is true between a barrier-confirmed election and the loss
	// of leadership; late observers are told at once.
	leading bool
	// removed remembers members an operator removed (by the Started time
	// they had) so the leader does not add them back until they restart.
	removed map[string]int64
	// leader runs the leader loop and the leader-only jobs.
	leader *leaderRunner
	// touchSink receives relayed touches on the leader (touchrelay.go).
	touchSink func(fsm.Touch)
}

// Open starts raft on the data dir and, in cluster mode, gossip. A fresh
// data dir with no peers and no --join bootstraps a single-node cluster.
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
	if cfg.DeadNodeTimeout == 0 {
		cfg.DeadNodeTimeout = 10 * time.Minute
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node1"
	}
	if cfg.RaftAddr == "" && (len(cfg.Join) > 0 || cfg.BootstrapExpect > 1) {
		return nil, errors.New("--join and --bootstrap-expect need --cluster-listen and --gossip-listen")
	}
	if cfg.RaftAddr != "" && cfg.GossipAddr == "" && (len(cfg.Join) > 0 || cfg.BootstrapExpect > 1) {
		return nil, errors.New("a multi-node cluster needs --gossip-listen")
	}
	dir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, FSM: f, log: cfg.Logger, started: time.Now().UnixNano(), stop: make(chan struct{}),
		removed: map[string]int64{}}
	n.metrics = newNodeMetrics(n)
	n.leader = &leaderRunner{log: n.log, barrierMin: 100 * time.Millisecond, barrierMax: 5 * time.Second,
		barrier: func(ctx context.Context) error {
			if n.raft.State() != raft.Leader {
				return ErrNotLeader
			}
			return n.wait(ctx, n.raft.Barrier(n.cfg.ApplyTimeout))
		},
		gained: func() { n.setLeading(true) }, lost: func() { n.setLeading(false) }}
	ok := false
	defer func() {
		if !ok {
			n.closeResources()
		}
	}()

	rc, err := raftConfig(cfg)
	if err != nil {
		return nil, err
	}

	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: logStoreOptions()})
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	n.closers = append(n.closers, store)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, rc.Logger)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	n.snaps = snaps

	addr, err := n.openTransport(rc.Logger)
	if err != nil {
		return nil, err
	}

	hasState, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return nil, err
	}
	n.hasState.Store(hasState)
	// The leader reads the entry before each batch it sends (to name the
	// previous entry); without a cache every heartbeat to every follower
	// re-read and decoded the last entry from bolt, and an idle leader whose
	// last entry was a big import burnt a core on it. Only the newest
	// entries matter for that: 1024 cached entries of 10,000-decision
	// imports held ~300 MB of heap (RSS for 1M decisions 1,094 MiB; 16:
	// see BENCHMARKS.md).
	logs, err := raft.NewLogCache(raftLogCacheEntries, store)
	if err != nil {
		return nil, err
	}
	n.logs = logs
	r, err := raft.NewRaft(rc, f, logs, store, snaps, n.transport)
	if err != nil {
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	if cfg.GossipAddr != "" && cfg.RaftAddr != "" {
		g, err := startGossip(n, cfg.GossipAddr)
		if err != nil {
			return nil, err
		}
		n.gossip = g
	}
	soloBootstrap := len(cfg.Join) == 0 && cfg.BootstrapExpect <= 1
	if !hasState && soloBootstrap {
		cfgn := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: addr, Suffrage: raft.Voter}}}
		if err := r.BootstrapCluster(cfgn).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return nil, fmt.Errorf("bootstrap: %w", err)
		}
		n.hasState.Store(true)
	}
	ok = true
	n.wg.Add(3)
	go n.watchLeadership()
	go n.watchLeaderChanges()
	go n.maintain()
	return n, nil
}

// raftConfig is raft's configuration for cfg (timing defaults applied).
func raftConfig(cfg Config) (*raft.Config, error) {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = orDefault(cfg.HeartbeatTimeout, DefaultHeartbeatTimeout)
	rc.ElectionTimeout = orDefault(cfg.ElectionTimeout, DefaultElectionTimeout)
	rc.LeaderLeaseTimeout = orDefault(cfg.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	if cfg.LeaderLeaseTimeout == 0 && rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	rc.CommitTimeout = orDefault(cfg.CommitTimeout, DefaultCommitTimeout)
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("raft timing: %w", err)
	}
	rc.MaxAppendEntries = 256
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = 8192
	rc.SnapshotInterval = 30 * time.Second
	rc.TrailingLogs = 10240
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	rc.Logger = newRaftLogger(cfg.Logger) // through slog, repeats limited (logging.go)
	return rc, nil
}

// openTransport opens raft's transport: in-process for a single node
// without a cluster port, else the cluster port's listener, shared by raft
// and the internal RPC service. It returns this node's raft address.
func (n *Node) openTransport(logger hclog.Logger) (raft.ServerAddress, error) {
	cfg := n.cfg
	if cfg.RaftAddr == "" {
		addr := raft.ServerAddress("local-" + cfg.NodeID)
		_, n.transport = raft.NewInmemTransport(addr)
		return addr, nil
	}
	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return "", fmt.Errorf("cluster listener: %w", err)
	}
	n.mux = newMux(ln)
	n.mux.wrap = cfg.WrapServer
	n.rpc.wrap = cfg.WrapClient
	go n.mux.serve()
	adv := ln.Addr()
	if cfg.RaftAdvertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertise); err != nil {
			return "", fmt.Errorf("--cluster-advertise: %w", err)
		}
	}
	n.rpc.source = sourceFor(ln.Addr())
	layer := &raftLayer{subListener: n.mux.subs[muxRaft], advertise: adv, source: n.rpc.source, wrap: cfg.WrapClient, stop: n.stop}
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 5, Timeout: 10 * time.Second, Logger: logger})
	addr := raft.ServerAddress(adv.String())
	n.cfg.RaftAddr = string(addr)
	go func() {
		for {
			c, err := n.mux.subs[muxRPC].Accept()
			if err != nil {
				return
			}
			go n.serveRPC(c)
		}
	}()
	return addr, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// IsLeader reports whether this node is the raft leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Snapshot forces a raft snapshot (tests, operators).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Leave is the graceful part of a shutdown: a leader hands leadership
// over first, and gossip announces the departure so peers do not wait for
// failure detection. The node stays a raft voter (like Consul servers).
func (n *Node) Leave() {
	if n.raft.State() == raft.Leader {
		f := n.raft.GetConfiguration()
		if f.Error() == nil && len(f.Configuration().Servers) > 1 {
			if err := n.raft.LeadershipTransfer().Error(); err != nil {
				n.log.Warn("leadership transfer failed", "err", err)
			}
		}
	}
	if n.gossip != nil && !n.left.Load() {
		_ = n.gossip.ml.Leave(2 * time.Second)
	}
}

// Close stops raft and releases the stores.
func (n *Node) Close() error {
	n.closing.Store(true)
	close(n.stop)
	err := n.raft.Shutdown().Error()
	n.wg.Wait()
	n.closeResources()
	return err
}

func (n *Node) closeResources() {
	if n.gossip != nil && !n.left.Load() {
		_ = n.gossip.ml.Shutdown()
	}
	if c, ok := n.transport.(io.Closer); ok {
		_ = c.Close()
	}
	if n.mux != nil {
		_ = n.mux.Close()
	}
	n.rpc.closeAll()
	for _, c := range n.closers {
		_ = c.Close()
	}
}

// logStoreOptions are the raft log's BoltDB options. Big entries (a
// pulled list is ~700 KB a chunk) free hundreds of pages each when the log
// is compacted, and with the defaults every commit then sorts and writes
// the whole free list (15 ms seen on one core) and grows the mapping in
// steps that copy the open transaction's nodes: the free list is not
// written (BoltDB rebuilds it from the pages when it opens the file, a
// scan of a file that holds only the trailing logs), it is a hash map
// rather than a sorted array, and the first mapping is 64 MiB (address
// space, not memory).
func logStoreOptions() *bbolt.Options {
	o := *bbolt.DefaultOptions
	o.NoFreelistSync = true
	o.FreelistType = bbolt.FreelistMapType
	o.InitialMmapSize = 64 << 20
	return &o
}
