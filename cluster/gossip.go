package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// memberMeta is what each node gossips about itself.
type memberMeta struct {
	RaftAddr string `json:"r"`
	APIURL   string `json:"a,omitempty"`
	// HasState: the node is (or was) part of a raft configuration, so a
	// cluster exists and newcomers must wait to be added, not bootstrap.
	HasState bool `json:"s,omitempty"`
	Expect   int  `json:"e,omitempty"`
	// Started is the process start time; a member removed by an operator
	// is re-added only once it restarts (a newer Started).
	Started int64 `json:"t"`
	// Ext lists the command types beyond the baseline this node applies
	// (feature gating for rolling upgrades, see fsm.Baseline).
	Ext []uint8 `json:"x,omitempty"`
	// KeyGen is the generation of the gossip keyring this node applied
	// (a key rotation waits for every voter between its steps).
	KeyGen uint64 `json:"k,omitempty"`
}

// member is the local view of one gossip member.
type member struct {
	ID    string
	Addr  string
	Meta  memberMeta
	State MemberState
	Since time.Time
}

type gossip struct {
	n       *Node
	ml      *memberlist.Memberlist
	mu      sync.Mutex
	members map[string]*member
	events  chan struct{}
	// peersFile remembers the gossip addresses of peers (like Serf's
	// snapshot) so a restarted node can find the cluster again.
	peersFile  string
	savedPeers string

	// keyring is memberlist's (nil with clear-text gossip); keyGen the
	// generation last installed by SetGossipKeys.
	keyring *memberlist.Keyring
	keyGen  atomic.Uint64
	// checks are the leader's peer-certificate checks (members.go).
	checkMu sync.Mutex
	checks  map[string]*peerCheck
}

// rememberPeers writes the alive peers' gossip addresses when they change.
func (g *gossip) rememberPeers() {
	var addrs []string
	for _, m := range g.snapshot() {
		if m.ID != g.n.cfg.NodeID && m.State == MemberAlive && m.Addr != "" {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) == 0 {
		return
	}
	sort.Strings(addrs)
	b, _ := json.Marshal(addrs)
	if string(b) == g.savedPeers {
		return
	}
	tmp := g.peersFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err == nil && os.Rename(tmp, g.peersFile) == nil {
		g.savedPeers = string(b)
	}
}

func (g *gossip) loadPeers() []string {
	b, err := os.ReadFile(g.peersFile)
	if err != nil {
		return nil
	}
	var addrs []string
	_ = json.Unmarshal(b, &addrs)
	return addrs
}

func (g *gossip) kick() {
	select {
	case g.events <- struct{}{}:
	default:
	}
}

// NodeMeta implements memberlist.Delegate.
func (g *gossip) NodeMeta(limit int) []byte {
	m := g.n.meta()
	m.KeyGen = g.keyGen.Load()
	b, _ := json.Marshal(m)
	if len(b) > limit {
		return nil
	}
	return b
}

func (g *gossip) NotifyMsg([]byte)                           {}
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

func (g *gossip) update(node *memberlist.Node) {
	var meta memberMeta
	_ = json.Unmarshal(node.Meta, &meta)
	g.mu.Lock()
	m, ok := g.members[node.Name]
	st := memberStateOf(node.State)
	if !ok {
		m = &member{ID: node.Name}
		g.members[node.Name] = m
	}
	if !ok || m.State != st {
		m.Since = time.Now()
	}
	m.Addr = net.JoinHostPort(node.Addr.String(), strconv.Itoa(int(node.Port)))
	m.State = st
	if len(node.Meta) > 0 {
		m.Meta = meta
	}
	g.mu.Unlock()
	g.kick()
}

// NotifyJoin implements memberlist.EventDelegate.
func (g *gossip) NotifyJoin(node *memberlist.Node) {
	n := *node
	n.State = memberlist.StateAlive
	g.update(&n)
}

// NotifyLeave implements memberlist.EventDelegate.
//
// memberlist passes the Node part of its state, whose State field it does
// not update on death (the live state is kept elsewhere): a leave event
// means gone (dead, or left gracefully).
func (g *gossip) NotifyLeave(node *memberlist.Node) {
	n := *node
	if n.State != memberlist.StateLeft {
		n.State = memberlist.StateDead
	}
	g.update(&n)
}

// NotifyUpdate implements memberlist.EventDelegate.
func (g *gossip) NotifyUpdate(node *memberlist.Node) {
	n := *node
	n.State = memberlist.StateAlive
	g.update(&n)
}

func (g *gossip) snapshot() []member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, *m)
	}
	return out
}

func startGossip(n *Node, bind string) (*gossip, error) {
	host, portStr, err := net.SplitHostPort(bind)
	if err != nil {
		return nil, fmt.Errorf("--gossip-listen: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("--gossip-listen port: %w", err)
	}
	g := &gossip{n: n, members: map[string]*member{}, events: make(chan struct{}, 1), checks: map[string]*peerCheck{},
		peersFile: filepath.Join(n.cfg.DataDir, "gossip-peers.json")}
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = n.cfg.NodeID
	cfg.BindAddr = host
	cfg.BindPort = port
	cfg.AdvertiseAddr = host
	cfg.AdvertisePort = port
	cfg.Delegate = g
	cfg.Events = g
	cfg.DeadNodeReclaimTime = time.Second
	// LAN on loopback or a data centre: detect failures within ~2 s.
	cfg.ProbeInterval = 500 * time.Millisecond
	cfg.ProbeTimeout = 250 * time.Millisecond
	cfg.GossipInterval = 100 * time.Millisecond
	cfg.SuspicionMult = 2
	cfg.Logger = newMemberlistLogger(n.log) // through slog, repeats limited (logging.go)
	if n.cfg.GossipKey != nil {
		kr, err := memberlist.NewKeyring(nil, n.cfg.GossipKey)
		if err != nil {
			return nil, fmt.Errorf("gossip key: %w", err)
		}
		cfg.Keyring = kr
		g.keyring = kr
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	g.ml = ml
	return g, nil
}

// SetGossipKeys makes the gossip keyring exactly keys, sending with
// primary, and announces generation gen in this node's gossip metadata.
// Keys are installed before the primary changes and removed last, so no
// message encrypted with a key some member still sends with is refused.
func (n *Node) SetGossipKeys(gen uint64, primary []byte, keys [][]byte) error {
	if n.gossip == nil || n.gossip.keyring == nil {
		return errors.New("gossip is not encrypted on this node")
	}
	kr := n.gossip.keyring
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			return err
		}
	}
	if err := kr.UseKey(primary); err != nil {
		return err
	}
	keep := map[string]bool{string(primary): true}
	for _, k := range keys {
		keep[string(k)] = true
	}
	for _, k := range kr.GetKeys() {
		if !keep[string(k)] {
			if err := kr.RemoveKey(k); err != nil {
				return err
			}
		}
	}
	if n.gossip.keyGen.Swap(gen) != gen {
		_ = n.gossip.ml.UpdateNode(time.Second)
	}
	return nil
}

// GossipKeyGens returns the keyring generation each alive gossip member
// announces (this node's own included).
func (n *Node) GossipKeyGens() map[string]uint64 {
	out := map[string]uint64{}
	if n.gossip == nil {
		return out
	}
	for _, m := range n.gossip.snapshot() {
		if m.State == MemberAlive {
			out[m.ID] = m.Meta.KeyGen
		}
	}
	out[n.cfg.NodeID] = n.gossip.keyGen.Load()
	return out
}

// RefreshGossip exchanges full gossip state (memberlist's push/pull, what
// a join does) with the given members, so their latest metadata is seen
// at once: a metadata broadcast is retransmitted only a few times, to
// random members (recently dead ones included), and may miss a node until
// the next periodic push/pull, 30 s later.
func (n *Node) RefreshGossip(ids []string) {
	if n.gossip == nil || len(ids) == 0 {
		return
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var addrs []string
	for _, m := range n.gossip.snapshot() {
		if want[m.ID] && m.State == MemberAlive && m.Addr != "" {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) > 0 {
		_, _ = n.gossip.ml.Join(addrs)
	}
}
