package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/halapi/halapi/internal/testharness"
)

const (
	clusterSize = 3
	// clusterReadyTimeout bounds the formation of a cluster and the return
	// of a restarted node.
	clusterReadyTimeout = 60 * time.Second
)

// cluster is a 3-node halapi cluster on loopback: plain HTTP, plain TCP
// between the nodes (--insecure-cluster, no join tokens), every node
// joining the first one's gossip address.
type cluster struct {
	b     *bench
	name  string
	nodes []*server
	extra []string // extra serve arguments of every node
	env   []string // added to every node's environment
	join  string   // the first node's gossip address
}

// startCluster starts the nodes (`halapi serve --node-id nI --data-dir DI
// --listen 127.0.0.1:AI --plain-http --cluster-listen 127.0.0.1:CI
// --gossip-listen 127.0.0.1:GI --join 127.0.0.1:G1 --bootstrap-expect 3
// --insecure-cluster`, plus --metrics-listen when the binary has it, plus
// extra) and waits until they have formed a cluster: one leader, every
// node applied up to its commit index.
func (b *bench) startCluster(ctx context.Context, name string, extra ...string) (*cluster, error) {
	return b.startClusterEnv(ctx, name, nil, extra...)
}

// startClusterEnv is startCluster with env added to every node's environment.
func (b *bench) startClusterEnv(ctx context.Context, name string, env []string, extra ...string) (*cluster, error) {
	if !b.kind.plainFlag {
		return nil, errors.New("this halapi binary has no --plain-http")
	}
	c := &cluster{b: b, name: name, extra: extra, env: env}
	for range clusterSize {
		if err := c.spawnNode(); err != nil {
			return nil, err
		}
	}
	for _, s := range c.nodes {
		if err := s.waitHealthy(ctx); err != nil {
			return nil, fmt.Errorf("node %s: %w%s", s.name, err, s.logTail())
		}
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// spawnNode starts one more node (n1, n2... in order) joining the first
// one's gossip address; it does not wait for it.
func (c *cluster) spawnNode() error {
	b := c.b
	api, err := testharness.FreeAddr()
	if err != nil {
		return err
	}
	raftAddr, err := testharness.FreeAddr()
	if err != nil {
		return err
	}
	gossip, err := testharness.FreeGossipAddr()
	if err != nil {
		return err
	}
	if len(c.nodes) == 0 {
		c.join = gossip
	}
	id := fmt.Sprintf("n%d", len(c.nodes)+1)
	s, err := newServer(b.kind.bin, filepath.Join(b.tmp, c.name+"-"+id), c.name+"/"+id, api)
	if err != nil {
		return err
	}
	args := []string{"serve", "--node-id", id, "--data-dir", s.dataDir, "--listen", s.addr, "--plain-http",
		"--cluster-listen", raftAddr, "--gossip-listen", gossip, "--join", c.join,
		"--bootstrap-expect", strconv.Itoa(clusterSize), "--insecure-cluster", "--log-level", "warn"}
	if b.kind.metricsFlag {
		if args, err = s.withMetrics(args); err != nil {
			return err
		}
	}
	s.proc.Env = c.env
	if err := s.proc.Start(append(args, c.extra...)...); err != nil {
		return err
	}
	b.track(s)
	c.nodes = append(c.nodes, s)
	return nil
}

func (c *cluster) pids() []int {
	var out []int
	for _, s := range c.nodes {
		if s.running() {
			out = append(out, s.pid())
		}
	}
	return out
}

// peersOf is the pids of the running nodes other than s.
func (c *cluster) peersOf(s *server) []int {
	var out []int
	for _, o := range c.nodes {
		if o != s && o.running() {
			out = append(out, o.pid())
		}
	}
	return out
}

// index is a raft index as `cluster status -o json` prints it (a number,
// or a string holding one).
type index uint64

func (x *index) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseUint(string(bytes.Trim(b, `"`)), 10, 64)
	if err != nil {
		return fmt.Errorf("index %s: %w", b, err)
	}
	*x = index(v)
	return nil
}

// clusterStatus is `halapi cluster status -o json`.
type clusterStatus struct {
	NodeID       string `json:"node_id"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	CommitIndex  index  `json:"commit_index"`
	AppliedIndex index  `json:"applied_index"`
	LastLogIndex index  `json:"last_log_index"`
	Members      []struct {
		ID     string `json:"id"`
		Role   string `json:"role"`
		State  string `json:"state"`
		APIURL string `json:"api_url"`
	} `json:"members"`
}

func (s *server) clusterStatus(ctx context.Context) (clusterStatus, error) {
	var st clusterStatus
	out, err := s.cli(ctx, "cluster", "status", "-o", "json")
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("cluster status: %w: %.300s", err, out)
	}
	return st, nil
}

// ready checks the cluster once: every node up and answering, all agreeing
// on one leader that says it leads, every node applied up to its own and
// the leader's commit index, and the leader seeing all members alive.
func (c *cluster) ready(ctx context.Context) (leader int, why string) {
	sts := make([]clusterStatus, len(c.nodes))
	for i, s := range c.nodes {
		if !s.running() {
			return -1, s.name + " is not running"
		}
		st, err := s.clusterStatus(ctx)
		if err != nil {
			return -1, err.Error()
		}
		sts[i] = st
	}
	leader = -1
	for i, st := range sts {
		switch {
		case st.Leader == "" || st.Leader != sts[0].Leader:
			return -1, fmt.Sprintf("no common leader (%s says %q, %s says %q)", sts[0].NodeID, sts[0].Leader, st.NodeID, st.Leader)
		case st.AppliedIndex < st.CommitIndex:
			return -1, fmt.Sprintf("%s applied %d of %d", st.NodeID, st.AppliedIndex, st.CommitIndex)
		case strings.EqualFold(st.State, "leader"):
			if st.NodeID != st.Leader {
				return -1, fmt.Sprintf("%s leads but says %s leads", st.NodeID, st.Leader)
			}
			leader = i
		case !strings.EqualFold(st.State, "follower"):
			return -1, fmt.Sprintf("%s is %s", st.NodeID, st.State)
		}
	}
	if leader < 0 {
		return -1, "no node leads yet"
	}
	// A follower learns the commit index with the leader's next message:
	// its own "applied = commit" can predate the last acknowledged write.
	// The leader's commit index is the one that counts.
	for _, st := range sts {
		if st.AppliedIndex < sts[leader].CommitIndex {
			return -1, fmt.Sprintf("%s applied %d of the leader's %d", st.NodeID, st.AppliedIndex, sts[leader].CommitIndex)
		}
	}
	alive := 0
	for _, m := range sts[leader].Members {
		if strings.EqualFold(m.State, "alive") {
			alive++
		}
	}
	if alive != len(c.nodes) {
		return -1, fmt.Sprintf("the leader sees %d of %d members alive", alive, len(c.nodes))
	}
	return leader, ""
}

// waitReady polls ready until it holds.
func (c *cluster) waitReady(ctx context.Context) error {
	_, err := c.waitLeader(ctx)
	return err
}

// waitLeader polls ready until it holds and returns the leader that check
// found. (Checking again afterwards races any write the cluster makes on
// its own, such as the bouncers' cursor entries: a follower is briefly one
// entry behind the leader's new commit index.)
func (c *cluster) waitLeader(ctx context.Context) (int, error) {
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		l, why := c.ready(ctx)
		if why == "" {
			return l, nil
		}
		if time.Now().After(deadline) {
			var tails string
			for _, s := range c.nodes {
				tails += s.logTail()
			}
			return -1, fmt.Errorf("cluster %s not ready within %s: %s%s", c.name, clusterReadyTimeout, why, tails)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// roles returns the leader and the followers (waiting until the cluster
// is ready).
func (c *cluster) roles(ctx context.Context) (leader *server, followers []*server, err error) {
	l, err := c.waitLeader(ctx)
	if err != nil {
		return nil, nil, err
	}
	for i, s := range c.nodes {
		if i != l {
			followers = append(followers, s)
		}
	}
	return c.nodes[l], followers, nil
}

// kill SIGKILLs a node and waits for the process to be gone.
func (c *cluster) kill(s *server) error {
	if err := s.proc.Kill(stopTimeout); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// restart starts a stopped node again with the same command line and waits
// until the cluster is whole again.
func (c *cluster) restart(ctx context.Context, s *server) error {
	if err := s.proc.Restart(); err != nil {
		return err
	}
	if err := s.waitHealthy(ctx); err != nil {
		return fmt.Errorf("restarted node %s: %w%s", s.name, err, s.logTail())
	}
	return c.waitReady(ctx)
}

func (c *cluster) stop() {
	for _, s := range c.nodes {
		s.stop()
	}
}
