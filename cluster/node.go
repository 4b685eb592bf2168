package cluster

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
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
	// APIURL is this node's client API URL, shown in cluster status.
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
	log       *slog.Logger
	started   int64
	profInfo  atomic.Pointer[func() ProfilesInfo] // profilesinfo.go
	hasState  atomic.Bool
	closing   atomic.Bool
	left      atomic.Bool
	// reconciles counts the leader's membership rounds (tests wait on it).
	reconciles atomic.Int64
	metrics    *nodeMetrics
	fresh      freshness
	logs       raft.LogStore
	snaps      raft.SnapshotStore // backups (backup.go)
	stop       chan struct{}
	wg         sync.WaitGroup

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

	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	n.closers = append(n.closers, store)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, rc.Logger)
	if err != nil {
		return nil, fmt.Errorf("open snapshot store: %w", err)
	}
	n.snaps = snaps

	var addr raft.ServerAddress
	if cfg.RaftAddr == "" {
		addr = raft.ServerAddress("local-" + cfg.NodeID)
		_, t := raft.NewInmemTransport(addr)
		n.transport = t
	} else {
		ln, err := net.Listen("tcp", cfg.RaftAddr)
		if err != nil {
			return nil, fmt.Errorf("cluster listener: %w", err)
		}
		n.mux = newMux(ln)
		n.mux.wrap = cfg.WrapServer
		n.rpc.wrap = cfg.WrapClient
		go n.mux.serve()
		adv := ln.Addr()
		if cfg.RaftAdvertise != "" {
			if adv, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertise); err != nil {
				return nil, fmt.Errorf("--cluster-advertise: %w", err)
			}
		}
		n.rpc.source = sourceFor(ln.Addr())
		layer := &raftLayer{subListener: n.mux.subs[muxRaft], advertise: adv, source: n.rpc.source, wrap: cfg.WrapClient, stop: n.stop}
		n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream: layer, MaxPool: 5, Timeout: 10 * time.Second, Logger: rc.Logger})
		addr = raft.ServerAddress(adv.String())
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
	n.wg.Add(2)
	go n.watchLeadership()
	go n.maintain()
	return n, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// joinTargets is --join plus the gossip addresses of peers seen in earlier
// runs, without this node's own address.
func (n *Node) joinTargets() []string {
	seen := map[string]bool{n.cfg.GossipAddr: true}
	var out []string
	for _, a := range append(append([]string{}, n.cfg.Join...), n.gossip.loadPeers()...) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func (n *Node) meta() memberMeta {
	return memberMeta{RaftAddr: n.cfg.RaftAddr, APIURL: n.cfg.APIURL, HasState: n.hasState.Load(),
		Expect: n.cfg.BootstrapExpect, Started: n.started, Ext: fsm.Extensions()}
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

// maintain joins gossip, bootstraps when the expected servers have met,
// and, on the leader, reconciles raft membership with gossip.
func (n *Node) maintain() {
	defer n.wg.Done()
	if n.gossip == nil {
		return
	}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	var lastJoin time.Time
	for {
		// Alone in gossip but with somewhere to go (--join, or peers
		// remembered from earlier runs): (re)join. This also brings a
		// restarted node back when the others had given it up for dead
		// and would not contact it themselves.
		if n.gossip.ml.NumMembers() <= 1 && time.Since(lastJoin) > time.Second {
			if targets := n.joinTargets(); len(targets) > 0 {
				lastJoin = time.Now()
				if _, err := n.gossip.ml.Join(targets); err != nil {
					n.log.Debug("gossip join failed, retrying", "err", err)
				}
			}
		}
		n.gossip.rememberPeers()
		n.refreshState()
		if !n.hasState.Load() {
			n.tryBootstrap()
		}
		if n.raft.State() == raft.Leader {
			n.reconcile()
			n.reconciles.Add(1)
		}
		if n.raft.State() == raft.Shutdown && !n.closing.Load() {
			n.leaveAsRemoved()
			return
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		case <-n.gossip.events:
		}
	}
}

// refreshState marks the node as part of a cluster once raft knows a
// configuration, and tells the other members.
func (n *Node) refreshState() {
	if n.hasState.Load() {
		return
	}
	f := n.raft.GetConfiguration()
	if f.Error() == nil && len(f.Configuration().Servers) > 0 {
		n.hasState.Store(true)
		_ = n.gossip.ml.UpdateNode(time.Second)
	}
}

func (n *Node) tryBootstrap() {
	members := n.gossip.snapshot()
	var ready []member
	for _, m := range members {
		if m.State != "alive" {
			continue
		}
		if m.Meta.HasState {
			return // a cluster exists: its leader will add us
		}
		if m.Meta.Expect == n.cfg.BootstrapExpect && m.Meta.RaftAddr != "" {
			ready = append(ready, m)
		}
	}
	if n.cfg.BootstrapExpect <= 0 || len(ready) < n.cfg.BootstrapExpect {
		return
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].ID < ready[j].ID })
	var servers []raft.Server
	for _, m := range ready {
		servers = append(servers, raft.Server{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.Meta.RaftAddr), Suffrage: raft.Voter})
	}
	err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		n.log.Warn("bootstrap failed", "err", err)
		return
	}
	n.log.Info("bootstrapped the cluster", "servers", len(servers))
	n.hasState.Store(true)
	_ = n.gossip.ml.UpdateNode(time.Second)
}

// reconcile (leader only) adds alive gossip members that raft does not
// know, and removes members gone longer than DeadNodeTimeout while a
// quorum of healthy voters remains.
func (n *Node) reconcile() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	servers := f.Configuration().Servers
	inCfg := map[string]raft.Server{}
	for _, s := range servers {
		inCfg[string(s.ID)] = s
	}
	members := map[string]member{}
	for _, m := range n.gossip.snapshot() {
		members[m.ID] = m
	}
	n.mu.Lock()
	removed := make(map[string]int64, len(n.removed))
	for k, v := range n.removed {
		removed[k] = v
	}
	n.mu.Unlock()
	for id, m := range members {
		if m.State != "alive" || m.Meta.RaftAddr == "" {
			continue
		}
		if started, ok := removed[id]; ok && m.Meta.Started <= started {
			continue
		}
		if s, ok := inCfg[id]; ok && string(s.Address) == m.Meta.RaftAddr {
			continue
		}
		// Secure clusters: only a member that proves a valid node
		// certificate for id at that address becomes a voter.
		if !n.voterAllowed(id, m.Meta.RaftAddr) {
			continue
		}
		n.log.Info("adding server to raft", "node", id, "addr", m.Meta.RaftAddr)
		if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(m.Meta.RaftAddr), 0, 5*time.Second).Error(); err != nil {
			n.log.Warn("add voter failed", "node", id, "err", err)
		}
	}
	if n.removeRevoked(servers, members) {
		return // one change per round
	}
	healthy := 0
	for _, s := range servers {
		if m, ok := members[string(s.ID)]; (ok && m.State == "alive") || string(s.ID) == n.cfg.NodeID {
			healthy++
		}
	}
	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.NodeID {
			continue
		}
		m, ok := members[id]
		if !ok || (m.State != "dead" && m.State != "left") || time.Since(m.Since) < n.cfg.DeadNodeTimeout {
			continue
		}
		// quorum of the configuration after removal must stay healthy
		if healthy < (len(servers)-1)/2+1 {
			continue
		}
		n.log.Warn("removing dead server from raft", "node", id, "gone_for", time.Since(m.Since).Round(time.Second))
		if err := n.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
			n.log.Warn("remove server failed", "node", id, "err", err)
			continue
		}
		return // one change per round
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

// Apply submits a command through the leader (forwarding it when this node
// follows), waits until this node has applied it, and returns its result.
func (n *Node) Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error) {
	start := time.Now()
	// One request ID for every attempt: an attempt whose answer was lost
	// (leader killed after committing, forwarding connection cut) is not
	// applied twice when it is retried, and the retry gets its result.
	if c.ID == "" {
		var id [16]byte
		_, _ = rand.Read(id[:])
		c.ID = hex.EncodeToString(id[:])
	}
	if err := n.checkSupported(c.Type); err != nil {
		return nil, err
	}
	// Refused here already (the leader checks again what it is sent).
	if err := c.Validate(); err != nil {
		return invalidResult(err), nil
	}
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	waitUntil := time.Now().Add(n.cfg.LeaderWait)
	// Decoded here, on the caller's goroutine, when this node leads: the
	// FSM's single apply goroutine then skips the decode (Predecoded), so
	// concurrent writers decode in parallel. Decoding the encoded bytes
	// (not using c) gives exactly what every follower decodes.
	var decoded *fsm.Command
	for {
		if n.raft.State() == raft.Leader {
			if decoded == nil {
				if dc, err := fsm.Decode(data); err == nil {
					decoded = &dc
				}
			}
			res, _, err := n.appendLocal(ctx, data, decoded)
			if err == nil {
				n.metrics.applyLatency.Observe(time.Since(start).Seconds())
				return res, nil
			}
			if !errors.Is(err, ErrNotLeader) {
				return nil, err
			}
		} else if addr, id := n.raft.LeaderWithID(); addr != "" && id != raft.ServerID(n.cfg.NodeID) && n.mux != nil {
			resp, err := n.rpc.call(ctx, string(addr), rpcApply, data)
			switch {
			case err != nil:
				n.log.Debug("forwarding to leader failed", "leader", id, "err", err)
			case resp.NotLeader:
			case resp.Fail != "":
				return nil, errors.New(resp.Fail)
			default:
				n.metrics.forwardedOut.Inc()
				// read-your-writes on this node
				if err := n.FSM.WaitForIndex(ctx, resp.Index); err != nil {
					return nil, fmt.Errorf("write committed but not yet applied here: %w", err)
				}
				n.metrics.applyLatency.Observe(time.Since(start).Seconds())
				return resultFromRPC(resp), nil
			}
		}
		if time.Now().After(waitUntil) || ctx.Err() != nil {
			return nil, ErrNotLeader
		}
		select {
		case <-ctx.Done():
			return nil, ErrNotLeader
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// applyLocal appends an encoded command a peer forwarded. The leader
// decodes and validates it first: nothing undecodable or invalid is ever
// committed (it would be applied by every node, after every restart). A
// refused command gets a CodeInvalid result and index 0.
func (n *Node) applyLocal(ctx context.Context, data []byte) (*fsm.Result, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	cmd, err := fsm.DecodeValid(data)
	if err != nil {
		n.log.Warn("refused an invalid forwarded command", "err", err)
		return invalidResult(err), 0, nil
	}
	return n.appendLocal(ctx, data, &cmd)
}

func invalidResult(err error) *fsm.Result {
	return &fsm.Result{Code: fsm.CodeOf(err), Message: err.Error()}
}

// appendLocal appends an encoded, validated command on the leader,
// stamping the leader's time, and waits until it is applied here. decoded,
// when the caller already decoded data (forwarded writes), spares the
// local FSM decoding the same bytes again.
func (n *Node) appendLocal(ctx context.Context, data []byte, decoded *fsm.Command) (*fsm.Result, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	entry := append([]byte(nil), data...)
	fsm.StampTime(entry, time.Now().UnixNano())
	if decoded != nil {
		n.FSM.Predecoded(entry, *decoded)
		defer n.FSM.Forget(entry)
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < timeout {
			timeout = d
		}
	}
	n.metrics.appended(entry)
	fut := n.raft.Apply(entry, timeout)
	if err := n.wait(ctx, fut); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return nil, 0, ErrNotLeader
		}
		return nil, 0, err
	}
	if err := n.FSM.WaitForIndex(ctx, fut.Index()); err != nil {
		return nil, 0, err
	}
	res, _ := fut.Response().(*fsm.Result)
	if res == nil {
		res = &fsm.Result{}
	}
	return res, fut.Index(), nil
}

// errStopping is returned for futures abandoned because the node is closing.
var errStopping = errors.New("node is shutting down")

// wait waits for a raft future, but not past ctx or the node's shutdown:
// with a buffered apply channel, a future queued just before raft shuts
// down is never answered.
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.stop:
		return errStopping
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remove takes a node out of the raft configuration (through the leader,
// waiting up to LeaderWait for one to be known).
func (n *Node) Remove(ctx context.Context, id string) error {
	payload, _ := json.Marshal(map[string]string{"id": id})
	waitUntil := time.Now().Add(n.cfg.LeaderWait)
	for {
		if n.raft.State() == raft.Leader {
			return n.removeLocal(id)
		}
		if addr, _ := n.raft.LeaderWithID(); addr != "" && n.mux != nil {
			resp, err := n.rpc.call(ctx, string(addr), rpcRemove, payload)
			switch {
			case err != nil:
				n.log.Debug("asking the leader to remove a node failed", "err", err)
			case resp.NotLeader:
			case resp.Fail != "":
				return errors.New(resp.Fail)
			default:
				return nil
			}
		}
		if time.Now().After(waitUntil) || ctx.Err() != nil {
			return ErrNotLeader
		}
		select {
		case <-ctx.Done():
			return ErrNotLeader
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (n *Node) removeLocal(id string) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	found := false
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("node %q is not a member of the cluster", id)
	}
	if id == n.cfg.NodeID {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			return fmt.Errorf("cannot hand leadership over before removing this node: %w", err)
		}
		return errors.New("leadership handed over; run the removal again (now on a follower)")
	}
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			if m.ID == id {
				n.mu.Lock()
				n.removed[id] = m.Meta.Started
				n.mu.Unlock()
			}
		}
	}
	var addr string
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			addr = string(s.Address)
		}
	}
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error(); err != nil {
		return err
	}
	// A removed follower is not told by raft; tell it, so it leaves gossip
	// and is not added back. Best effort: a dead node has nothing to do.
	if addr != "" && n.mux != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = n.rpc.call(ctx, addr, rpcLeave, nil)
		cancel()
	}
	return nil
}

// leaveAsRemoved is run on a node the leader removed: it stops raft and
// leaves gossip, and keeps serving reads from its last state.
func (n *Node) leaveAsRemoved() {
	if !n.left.CompareAndSwap(false, true) {
		return
	}
	if n.cfg.VerifyPeer != nil {
		// Secure cluster: its certificate is being revoked and the gossip
		// key rotated; a restart must not try to rejoin.
		n.writeRemovedMarker()
		n.log.Error("this node was removed from the cluster (halapi cluster remove): it left gossip and stopped raft and keeps serving reads from its last state; its node certificate is revoked, so it stays out even after a restart: to bring it back, start it with a new --join-token from `halapi cluster token`")
	} else {
		n.log.Error("this node was removed from the cluster: it left gossip and stopped raft; it keeps serving reads from its last state; restart it to join again")
	}
	if n.gossip != nil {
		_ = n.gossip.ml.Leave(time.Second)
		_ = n.gossip.ml.Shutdown()
	}
	_ = n.raft.Shutdown().Error()
}

// Member is one node as cluster status shows it.
type Member struct {
	ID           string `json:"id"`
	Role         string `json:"role"`  // leader, follower, nonvoter, joining
	State        string `json:"state"` // alive, suspect, dead, left, unknown
	RaftAddr     string `json:"raft_addr,omitempty"`
	APIURL       string `json:"api_url,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	CommitIndex  uint64 `json:"commit_index,omitempty"`
	Error        string `json:"error,omitempty"`
	// Profiles: what the member evaluates (profilesinfo.go).
	Profiles *ProfilesInfo `json:"profiles,omitempty"`
}

// Status is a point-in-time view of the node and, through it, the cluster.
type Status struct {
	NodeID       string   `json:"node_id"`
	State        string   `json:"state"`
	Leader       string   `json:"leader"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LastLogIndex uint64   `json:"last_log_index"`
	Healthy      bool     `json:"healthy"`
	Members      []Member `json:"members,omitempty"`
	// Warnings name risky settings of members (plainhttp.go).
	Warnings []string `json:"warnings,omitempty"`
	// Profiles: what this node evaluates (profilesinfo.go).
	Profiles *ProfilesInfo `json:"profiles,omitempty"`
}

func statU(st map[string]string, k string) uint64 {
	v, _ := strconv.ParseUint(st[k], 10, 64)
	return v
}

func (n *Node) localStatus() Status {
	st := n.raft.Stats()
	_, leader := n.raft.LeaderWithID()
	return Status{NodeID: n.cfg.NodeID, State: n.raft.State().String(), Leader: string(leader),
		Term: statU(st, "term"), CommitIndex: statU(st, "commit_index"), AppliedIndex: n.FSM.AppliedIndex(),
		LastLogIndex: statU(st, "last_log_index"), Healthy: leader != "", Profiles: n.profilesInfo()}
}

// Status returns this node's view plus every member, asking each for its
// indexes over the cluster port (bounded by ctx).
func (n *Node) Status(ctx context.Context) Status {
	st := n.localStatus()
	f := n.raft.GetConfiguration()
	servers := map[string]raft.Server{}
	if f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			servers[string(s.ID)] = s
		}
	}
	gm := map[string]member{}
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			gm[m.ID] = m
		}
	}
	ids := map[string]bool{}
	for id := range servers {
		ids[id] = true
	}
	for id, m := range gm {
		if m.State == "alive" || m.State == "suspect" {
			ids[id] = true
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for id := range ids {
		m := Member{ID: id, State: "unknown", Role: "joining"}
		if s, ok := servers[id]; ok {
			m.RaftAddr = string(s.Address)
			m.Role = "follower"
			if s.Suffrage != raft.Voter {
				m.Role = "nonvoter"
			}
			if id == st.Leader {
				m.Role = "leader"
			}
		}
		if g, ok := gm[id]; ok {
			m.State = g.State
			m.APIURL = g.Meta.APIURL
			if m.RaftAddr == "" {
				m.RaftAddr = g.Meta.RaftAddr
			}
		}
		if id == n.cfg.NodeID {
			m.State, m.APIURL = "alive", n.cfg.APIURL
			m.AppliedIndex, m.CommitIndex = st.AppliedIndex, st.CommitIndex
			m.Profiles = st.Profiles
			mu.Lock()
			st.Members = append(st.Members, m)
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func(m Member) {
			defer wg.Done()
			if m.RaftAddr != "" && n.mux != nil && m.State != "dead" && m.State != "left" {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				resp, err := n.rpc.call(cctx, m.RaftAddr, rpcStatus, nil)
				cancel()
				if err != nil {
					m.Error = err.Error()
				} else if resp.Status != nil {
					m.AppliedIndex, m.CommitIndex = resp.Status.AppliedIndex, resp.Status.CommitIndex
					m.Profiles = resp.Status.Profiles
				}
			}
			mu.Lock()
			st.Members = append(st.Members, m)
			mu.Unlock()
		}(m)
	}
	wg.Wait()
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].ID < st.Members[j].ID })
	st.Warnings = memberWarnings(st.Members)
	st.Warnings = append(st.Warnings, profilesWarnings(st.Members, st.Leader)...)
	return st
}

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
