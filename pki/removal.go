package pki

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// Taking a node out for good (secure clusters): `halapi cluster remove`
// removes it from raft (the leader tells a live node, which leaves gossip,
// stops raft and marks its data dir), revokes every node certificate it
// holds (the cluster port and every step-ca endpoint then refuse it), and
// rotates the gossip key so the key it knows no longer opens gossip. With
// --insecure-cluster only the raft removal happens.

// keyStepWait bounds the wait for every live voter to apply one step of a
// key rotation; a voter that lags applies the keyring from raft later.
const keyStepWait = 10 * time.Second

// RemoveMember takes node id out of the cluster for good (see above);
// the admin route DELETE /members/{id} calls it. Before Start it refuses
// with cluster.ErrNotLeader.
func (rt *Runtime) RemoveMember(ctx context.Context, id string) error {
	rt.mu.Lock()
	node, ca := rt.node, rt.ca
	rt.mu.Unlock()
	if node == nil {
		return cluster.ErrNotLeader
	}
	if rt.cfg.InsecureCluster || len(rt.id.GossipKey) == 0 {
		return node.Remove(ctx, id)
	}
	if ca == nil {
		return cluster.ErrNotLeader
	}
	if id == rt.cfg.NodeID {
		return fmt.Errorf("node %q cannot remove itself: run `halapi cluster remove %s` on another member", id, id)
	}
	// Removals started here are serialized: each rotates the gossip key;
	// two rotations interleaved would still converge (every node applies
	// the last keyring written), but members could miss gossip for a
	// moment.
	rt.rotateMu.Lock()
	defer rt.rotateMu.Unlock()
	if slices.Contains(node.Voters(), id) {
		if err := node.Remove(ctx, id); err != nil {
			return err
		}
	} else if !ca.HasNodeCert(id) && !ca.NodeRevoked(id) {
		return fmt.Errorf("node %q is not a member of the cluster", id)
	}
	// Out of raft (or already out: removed as dead with its certificates
	// still valid, or taken out by the leader after `cert revoke`):
	// revoke what is left, then rotate.
	serials, err := ca.RevokeNode(ctx, id, "cessationOfOperation")
	if err != nil {
		return fmt.Errorf("node %q is out of raft but revoking its certificates failed (run the command again): %w", id, err)
	}
	rt.log.Info("node removed from the cluster: its node certificates are revoked", "node", id, "serials", serials)
	if err := rt.rotateGossipKey(ctx, node); err != nil {
		return fmt.Errorf("node %q is out and its certificates are revoked, but rotating the gossip key failed (run the command again): %w", id, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	rt.waitReplicated(wctx)
	cancel()
	return nil
}

// rotateGossipKey replaces the gossip key in three replicated steps, each
// applied by every node to its memberlist keyring (applyGossipKeyring):
// install the new key beside the old ones, make it the primary (the key
// messages are sent with), remove the old ones. Between steps it waits
// until every live voter announces, in its gossip metadata, that it
// applied the step: a node then only ever receives messages encrypted
// with a key it has installed, so live members never lose gossip.
func (rt *Runtime) rotateGossipKey(ctx context.Context, node *cluster.Node) error {
	cur := GossipKeyringIn(rt.store)
	if len(cur.Primary) == 0 {
		return errors.New("the cluster has no gossip key")
	}
	nk, err := NewGossipKey()
	if err != nil {
		return err
	}
	both := append(slices.Clone(cur.Keys), nk)
	steps := []GossipKeyring{
		{Primary: cur.Primary, Keys: both}, // 1. install everywhere
		{Primary: nk, Keys: both},          // 2. send with the new key
		{Primary: nk, Keys: [][]byte{nk}},  // 3. drop the old ones
	}
	gen := cur.Gen
	for i, kr := range steps {
		gen++
		kr.Gen = gen
		if err := SetGossipKeyring(ctx, node, kr); err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
		if lag := waitKeyGen(ctx, node, gen); len(lag) > 0 {
			rt.log.Warn("gossip key rotation: voters did not confirm a step in time; they apply it from the replicated state",
				"step", i+1, "nodes", lag)
		}
	}
	rt.log.Info("gossip key rotated", "generation", gen)
	return nil
}

// waitKeyGen waits until every voter alive in gossip announces keyring
// generation gen or later, and returns the ones that did not in time.
func waitKeyGen(ctx context.Context, node *cluster.Node, gen uint64) []string {
	start := time.Now()
	deadline := start.Add(keyStepWait)
	lastRefresh := start
	for {
		gens := node.GossipKeyGens()
		var lag []string
		for _, v := range node.Voters() {
			if g, alive := gens[v]; alive && g < gen {
				lag = append(lag, v)
			}
		}
		if len(lag) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return lag
		}
		if time.Since(lastRefresh) >= 500*time.Millisecond {
			// The announcement may have missed this node: ask the
			// laggards for their state directly.
			lastRefresh = time.Now()
			node.RefreshGossip(lag)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// applyGossipKeyring installs the replicated gossip keyring on this node
// whenever it changes: it persists it first (DATA/pki/gossip.key, 0600,
// primary first, so a restart sends with the current key), then applies
// it to memberlist. A node that was down catches up through raft, which
// does not depend on gossip, and then applies the latest keyring.
func (rt *Runtime) applyGossipKeyring(ctx context.Context, store *fsm.FSM, node *cluster.Node) {
	var applied uint64
	for ctx.Err() == nil {
		if kr := GossipKeyringIn(store); kr.Gen > 0 && kr.Gen != applied {
			if err := SaveGossipKeys(rt.dir, kr.Primary, kr.Keys); err != nil {
				rt.log.Warn("cannot save the gossip keyring", "err", err)
			}
			if err := node.SetGossipKeys(kr.Gen, kr.Primary, kr.Keys); err != nil {
				rt.log.Warn("cannot install the gossip keyring", "generation", kr.Gen, "err", err)
			} else {
				applied = kr.Gen
				rt.log.Info("gossip keyring installed", "generation", kr.Gen, "keys", len(kr.Keys))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkRemoved handles a data dir marked by a removal: without a join
// token, or with one the cluster refuses (the old one still on the command
// line), the node refuses to start and says why (its certificate is
// revoked, its gossip key rotated away). With a fresh token it redeems it
// first, then sets the old state aside and returns the new identity, saved
// in DATA/pki: the node joins as a new member.
func (rt *Runtime) checkRemoved(ctx context.Context) (*JoinResult, error) {
	dataDir := rt.cfg.DataDir
	ri, err := cluster.ReadRemovedMarker(dataDir)
	if err != nil || ri == nil {
		return nil, err
	}
	out := fmt.Sprintf("this data dir belongs to node %q, removed from the cluster at %s (halapi cluster remove): its certificate is revoked and it stays out; to bring it back, start it with a new --join-token from `halapi cluster token`",
		ri.NodeID, ri.At.Format(time.RFC3339))
	if rt.cfg.JoinToken == "" || rt.cfg.JoinAPI == "" {
		return nil, errors.New(out)
	}
	jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	res, err := Join(jctx, rt.cfg.JoinAPI, rt.cfg.JoinToken, rt.cfg.NodeID, rt.sans)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("%s (the --join-token given was refused: %v)", out, err)
	}
	aside := filepath.Join(dataDir, "removed-"+strconv.FormatInt(time.Now().Unix(), 10))
	if err := os.MkdirAll(aside, 0o700); err != nil {
		return nil, err
	}
	for _, name := range []string{"raft", "pki", "gossip-peers.json", cluster.RemovedMarker} {
		if err := os.Rename(filepath.Join(dataDir, name), filepath.Join(aside, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("setting the removed node's state aside: %w", err)
		}
	}
	if err := SaveIdentity(rt.dir, res); err != nil {
		return nil, err
	}
	rt.log.Warn("this data dir belonged to a node removed from the cluster: rejoined with the join token, its old state is set aside",
		"old_node", ri.NodeID, "moved_to", aside)
	return res, nil
}
