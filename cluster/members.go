package cluster

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
)

// The voter rule (secure clusters): gossip membership alone never makes a
// raft voter. Before AddVoter the leader dials the address the member
// gossips as its cluster port, over the mTLS cluster port, and hands the
// certificate chain the peer presents to Config.VerifyPeer (chains to the
// cluster CA, node OU, CN == the member's node ID, recorded in the FSM,
// not revoked); the peer must then answer a status RPC naming itself with
// that ID. The check runs in the background (a fake member may gossip an
// address that never answers: reconcile must not block on it), and a
// member that failed is retried with a growing delay. Dialling the
// address that goes into the raft configuration proves that whoever
// answers there holds the node's key, so a gossip member cannot borrow
// another node's address or name.

// peerCheck is the state of one member's verification.
type peerCheck struct {
	addr     string
	okAt     time.Time // last success (zero: none for addr)
	next     time.Time // earliest next attempt after a failure
	delay    time.Duration
	running  bool
	failures int
}

const (
	peerCheckFresh    = 3 * time.Second
	peerCheckTimeout  = 3 * time.Second
	peerCheckMaxDelay = time.Minute
)

// voterAllowed tells reconcile whether member id, gossiping cluster
// address addr, may be made a voter now; without VerifyPeer (insecure
// clusters) every member may. Otherwise it starts a check when none is
// running or due and answers from the last result.
func (n *Node) voterAllowed(id, addr string) bool {
	if n.cfg.VerifyPeer == nil || n.cfg.WrapClient == nil {
		return true
	}
	if n.cfg.NodeRevoked != nil && n.cfg.NodeRevoked(id) {
		return false
	}
	g := n.gossip
	g.checkMu.Lock()
	defer g.checkMu.Unlock()
	c := g.checks[id]
	if c == nil || c.addr != addr {
		c = &peerCheck{addr: addr}
		g.checks[id] = c
	}
	if !c.okAt.IsZero() && time.Since(c.okAt) < peerCheckFresh {
		// One success allows one AddVoter: a later addition (after a
		// removal) is checked again.
		c.okAt = time.Time{}
		return true
	}
	if !c.running && time.Now().After(c.next) {
		c.running = true
		go n.runPeerCheck(id, addr, c)
	}
	return false
}

func (n *Node) runPeerCheck(id, addr string, c *peerCheck) {
	err := n.checkPeer(id, addr)
	g := n.gossip
	g.checkMu.Lock()
	c.running = false
	if err == nil {
		c.okAt, c.delay, c.failures = time.Now(), 0, 0
	} else {
		c.okAt = time.Time{}
		c.failures++
		c.delay = min(max(2*c.delay, time.Second), peerCheckMaxDelay)
		c.next = time.Now().Add(c.delay)
	}
	failures := c.failures
	g.checkMu.Unlock()
	switch {
	case err == nil:
		g.kick() // reconcile now
	case failures == 1 || failures%10 == 0:
		n.log.Warn("gossip member not made a raft voter: it did not prove a valid node certificate on its cluster port",
			"node", id, "addr", addr, "attempts", failures, "err", err)
	}
}

// checkPeer dials addr over the cluster port's mTLS and verifies the peer
// is node id (see the comment at the top of this file).
func (n *Node) checkPeer(id, addr string) error {
	c, err := dialService(addr, muxRPC, peerCheckTimeout, n.rpc.source, n.cfg.WrapClient)
	if err != nil {
		return err
	}
	defer c.Close()
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return errors.New("the cluster port connection is not TLS")
	}
	if err := n.cfg.VerifyPeer(id, tc.ConnectionState().PeerCertificates); err != nil {
		return err
	}
	resp, err := roundTrip(c, time.Now().Add(peerCheckTimeout), rpcStatus, nil)
	if err != nil {
		return fmt.Errorf("status RPC: %w", err)
	}
	if resp.Status == nil || resp.Status.NodeID != id {
		got := ""
		if resp.Status != nil {
			got = resp.Status.NodeID
		}
		return fmt.Errorf("the node at %s says it is %q, not %q", addr, got, id)
	}
	return nil
}

// removeRevoked (leader) takes out of raft one voter whose node
// certificates are revoked, only while the voters left alive keep a
// quorum of the configuration without it. It returns whether it changed
// the configuration.
func (n *Node) removeRevoked(servers []raft.Server, members map[string]member) bool {
	if n.cfg.NodeRevoked == nil {
		return false
	}
	for _, s := range servers {
		id := string(s.ID)
		if id == n.cfg.NodeID || !n.cfg.NodeRevoked(id) {
			continue
		}
		healthy := 0
		for _, o := range servers {
			if o.ID == s.ID {
				continue
			}
			if m, ok := members[string(o.ID)]; (ok && m.State == "alive") || string(o.ID) == n.cfg.NodeID {
				healthy++
			}
		}
		if healthy < (len(servers)-1)/2+1 {
			continue
		}
		n.log.Warn("removing a server whose node certificate is revoked from raft", "node", id)
		if err := n.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
			n.log.Warn("remove server failed", "node", id, "err", err)
			continue
		}
		return true
	}
	return false
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
		if m.State == "alive" {
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
		if want[m.ID] && m.State == "alive" && m.Addr != "" {
			addrs = append(addrs, m.Addr)
		}
	}
	if len(addrs) > 0 {
		_, _ = n.gossip.ml.Join(addrs)
	}
}

// Voters returns the IDs of the voters in the latest raft configuration.
func (n *Node) Voters() []string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.ID))
		}
	}
	return out
}

// RemovedMarker is written in the data dir of a node of a secure cluster
// when the leader tells it it was removed; at the next start the node
// refuses to rejoin without a new join token (cmd/halapi).
const RemovedMarker = "removed.json"

// RemovedInfo is the content of RemovedMarker.
type RemovedInfo struct {
	NodeID string    `json:"node_id"`
	At     time.Time `json:"at"`
}

// ReadRemovedMarker returns the marker in dataDir, nil when there is none.
func ReadRemovedMarker(dataDir string) (*RemovedInfo, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, RemovedMarker))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ri RemovedInfo
	if err := json.Unmarshal(b, &ri); err != nil {
		return nil, fmt.Errorf("%s: %w", RemovedMarker, err)
	}
	return &ri, nil
}

func (n *Node) writeRemovedMarker() {
	b, _ := json.Marshal(RemovedInfo{NodeID: n.cfg.NodeID, At: time.Now().UTC()})
	p := filepath.Join(n.cfg.DataDir, RemovedMarker)
	if err := os.WriteFile(p+".tmp", b, 0o600); err == nil {
		err = os.Rename(p+".tmp", p)
		if err != nil {
			n.log.Warn("cannot write the removal marker", "path", p, "err", err)
		}
	}
}
