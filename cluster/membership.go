package cluster

import (
	"errors"
	"sort"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// The membership loop (maintain, every 500 ms and on gossip events): join
// gossip (--join, or peers remembered from earlier runs), bootstrap once
// --bootstrap-expect servers with no raft state have met, and on the
// leader reconcile the raft configuration with gossip.

// maintain joins gossip, bootstraps when the expected servers have met,
// and, on the leader, reconciles raft membership with gossip.
func (n *Node) maintain() {
	defer n.wg.Done()
	if n.gossip == nil {
		// alone: only this build reads its snapshots
		n.FSM.SetCompressedSnapshots(true)
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
		// compressed snapshots once every voter reads them (the builds
		// that apply ImportList do)
		n.FSM.SetCompressedSnapshots(n.Supports(fsm.CmdImportList))
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
		if m.State != MemberAlive {
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

// reconcile (leader only) runs one membership round: it gathers what the
// leader sees, lets decideMembership choose (reconcile.go), and carries
// the actions out.
func (n *Node) reconcile() {
	v, ok := n.membershipView()
	if !ok {
		return
	}
	for _, a := range decideMembership(v) {
		switch a.Kind {
		case actVerify:
			n.startPeerCheck(a.ID, a.Addr)
		case actAdd:
			n.usePeerCheck(a.ID)
			n.log.Info("adding server to raft", "node", a.ID, "addr", a.Addr)
			if err := n.raft.AddVoter(raft.ServerID(a.ID), raft.ServerAddress(a.Addr), 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("add voter failed", "node", a.ID, "err", err)
			}
		case actRemove:
			if a.Reason == removeRevoked {
				n.log.Warn("removing a server whose node certificate is revoked from raft", "node", a.ID)
			} else {
				n.log.Warn("removing dead server from raft", "node", a.ID, "gone_for", a.GoneFor.Round(time.Second))
			}
			if err := n.raft.RemoveServer(raft.ServerID(a.ID), 0, 5*time.Second).Error(); err != nil {
				n.log.Warn("remove server failed", "node", a.ID, "err", err)
			}
		}
	}
}

// membershipView gathers the inputs of decideMembership: the raft
// configuration, the gossip members with their certificate status, the
// operator removals and the revoked nodes.
func (n *Node) membershipView() (membershipView, bool) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return membershipView{}, false
	}
	v := membershipView{Self: n.cfg.NodeID, DeadNodeTimeout: n.cfg.DeadNodeTimeout,
		Members: map[string]seenMember{}, Revoked: map[string]bool{}}
	// NodeRevoked scans the revoked certificates: once per ID and round.
	asked := map[string]bool{}
	revoked := func(id string) {
		if n.cfg.NodeRevoked != nil && !asked[id] {
			asked[id] = true
			if n.cfg.NodeRevoked(id) {
				v.Revoked[id] = true
			}
		}
	}
	for _, s := range f.Configuration().Servers {
		v.Servers = append(v.Servers, cfgServer{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
		revoked(string(s.ID))
	}
	now := time.Now()
	for _, m := range n.gossip.snapshot() {
		sm := seenMember{ID: m.ID, State: m.State, StateFor: now.Sub(m.Since), RaftAddr: m.Meta.RaftAddr, Started: m.Meta.Started}
		if m.State == MemberAlive && m.Meta.RaftAddr != "" {
			sm.Cert = n.peerCert(m.ID, m.Meta.RaftAddr)
			revoked(m.ID)
		}
		v.Members[m.ID] = sm
	}
	n.mu.Lock()
	v.Removed = make(map[string]int64, len(n.removed))
	for k, t := range n.removed {
		v.Removed[k] = t
	}
	n.mu.Unlock()
	return v, true
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
