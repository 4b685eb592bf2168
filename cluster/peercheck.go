package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"
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

// peerCert tells the membership decision what is known of member id's
// node certificate at the cluster address addr it gossips (no side
// effect: checks are started by startPeerCheck).
func (n *Node) peerCert(id, addr string) certStatus {
	if n.cfg.VerifyPeer == nil || n.cfg.WrapClient == nil {
		return certNotRequired
	}
	g := n.gossip
	g.checkMu.Lock()
	defer g.checkMu.Unlock()
	if c := g.checks[id]; c != nil && c.addr == addr && !c.okAt.IsZero() && time.Since(c.okAt) < peerCheckFresh {
		return certVerified
	}
	return certUnverified
}

// startPeerCheck starts checking member id at addr in the background,
// unless a check is running or the last failure's delay has not passed.
func (n *Node) startPeerCheck(id, addr string) {
	g := n.gossip
	g.checkMu.Lock()
	defer g.checkMu.Unlock()
	c := g.checks[id]
	if c == nil || c.addr != addr {
		c = &peerCheck{addr: addr}
		g.checks[id] = c
	}
	if !c.running && time.Now().After(c.next) {
		c.running = true
		go n.runPeerCheck(id, addr, c)
	}
}

// usePeerCheck spends member id's successful check on one AddVoter: a
// later addition (after a removal) is checked again.
func (n *Node) usePeerCheck(id string) {
	if n.cfg.VerifyPeer == nil || n.cfg.WrapClient == nil {
		return
	}
	g := n.gossip
	g.checkMu.Lock()
	if c := g.checks[id]; c != nil {
		c.okAt = time.Time{}
	}
	g.checkMu.Unlock()
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
