package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
)

// Removal by an operator (halapi cluster remove): the leader takes the node
// out of the raft configuration, remembers the Started time it gossiped so
// reconcile does not add it back before it restarts, and tells it; the
// removed node leaves gossip and stops raft (leaveAsRemoved). The removal
// of dead members is the leader's reconcile round (reconcile.go).

// Remove takes a node out of the raft configuration (through the leader,
// waiting up to LeaderWait for one to be known).
func (n *Node) Remove(ctx context.Context, id string) error {
	payload, _ := json.Marshal(map[string]string{"id": id})
	return n.viaLeader(ctx, func(context.Context) error {
		return n.removeLocal(id)
	}, func(ctx context.Context, addr string) error {
		resp, err := n.rpc.call(ctx, addr, rpcRemove, payload)
		switch {
		case err != nil:
			n.log.Debug("asking the leader to remove a node failed", "err", err)
			return ErrNotLeader
		case resp.NotLeader:
			return ErrNotLeader
		case resp.Fail != "":
			return errors.New(resp.Fail)
		}
		return nil
	})
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
