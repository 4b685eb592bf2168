package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"

	"github.com/halapi/halapi/internal/testharness"
)

// Multi-node harness: several halapi processes on loopback forming one raft
// cluster. Node i (1-based) of a cluster with address base B binds its
// cluster port and gossip on 127.0.0.<B+i> (outgoing cluster connections
// then come from that address) and its client API on 127.0.0.1. With
// WithFaultProxies, every node advertises a proxy on 127.0.0.1 instead of
// its cluster port; the proxies know the calling node from the source
// address and can cut any pair of nodes apart (FaultNet). Gossip (UDP) is
// not proxied: partitions are raft partitions.

const (
	// clusterFormTimeout bounds the wait for a cluster to elect a leader
	// and list every member as an alive voter.
	clusterFormTimeout = 30 * time.Second
	// convergeTimeout bounds the wait for nodes to catch up with the
	// leader.
	convergeTimeout = 20 * time.Second
	// gossipSettle bounds the wait for every node to see every other
	// (re)started node as alive (failure detection and rejoin take a few
	// probe intervals of 500ms).
	gossipSettle = 10 * time.Second
)

// ClusterNode is one member of a test cluster.
type ClusterNode struct {
	*Server
	Index       int    // 1-based
	ID          string // --node-id
	IP          string // 127.0.0.<base+Index>
	ClusterAddr string // --cluster-listen
	Advertise   string // --cluster-advertise ("" without proxies)
	GossipAddr  string // --gossip-listen
	MetricsAddr string // --metrics-listen

	// up is what client goroutines look at (the Server fields are only
	// touched by the test goroutine); epoch counts stops and starts, so a
	// client can tell that two answers came from the same process.
	up    atomic.Bool
	epoch atomic.Int64
}

// Up reports whether the test considers the node running.
func (n *ClusterNode) Up() bool { return n.up.Load() }

// Epoch changes whenever the node is stopped or started.
func (n *ClusterNode) Epoch() int64 { return n.epoch.Load() }

func (n *ClusterNode) setUp(up bool) {
	n.epoch.Add(1)
	n.up.Store(up)
}

// Cluster is a set of halapi nodes that joined each other.
type Cluster struct {
	t     testing.TB
	Nodes []*ClusterNode
	Net   *FaultNet // nil without WithFaultProxies
	base  int
	cfg   clusterConfig
	join  string
	size  int // --bootstrap-expect
}

type clusterConfig struct {
	proxied bool
	extra   []string
}

// ClusterOption tunes a cluster before it starts.
type ClusterOption func(*clusterConfig)

// WithFaultProxies puts a FaultNet proxy in front of every node's cluster
// port.
func WithFaultProxies() ClusterOption {
	return func(c *clusterConfig) { c.proxied = true }
}

// WithServeArgs adds flags to every node's serve command line.
func WithServeArgs(args ...string) ClusterOption {
	return func(c *clusterConfig) { c.extra = append(c.extra, args...) }
}

// StartCluster starts n nodes (n1 … nN) that all --join n1's gossip address
// with --bootstrap-expect n, and waits until they answer /health, agree on
// a leader and list each other as alive voters. base selects the node
// addresses 127.0.0.<base+i>: tests running at the same time need distinct
// bases.
func StartCluster(t testing.TB, n, base int, opts ...ClusterOption) *Cluster {
	t.Helper()

	c := &Cluster{t: t, base: base, size: n}
	for _, o := range opts {
		o(&c.cfg)
	}
	if c.cfg.proxied {
		c.Net = newFaultNet(t, base)
	}
	for i := 1; i <= n; i++ {
		c.newNode(i)
	}
	c.join = c.Nodes[0].GossipAddr
	for _, nd := range c.Nodes {
		nd.ExtraArgs = c.serveArgs(nd)
	}

	// Registered after every node: runs before their own cleanups, and
	// stops them all at once (one by one, the last ones would wait for a
	// quorum that is already gone).
	t.Cleanup(c.stopAll)

	startNodes(c.Nodes...)
	c.WaitStable(clusterFormTimeout, c.Nodes...)
	if !c.CheckMembersAlive(clusterFormTimeout, c.Nodes...) {
		t.FailNow()
	}

	return c
}

func (c *Cluster) newNode(i int) *ClusterNode {
	c.t.Helper()

	ip := fmt.Sprintf("127.0.0.%d", c.base+i)
	nd := &ClusterNode{
		Server:      NewServer(c.t),
		Index:       i,
		ID:          fmt.Sprintf("n%d", i),
		IP:          ip,
		ClusterAddr: net.JoinHostPort(ip, strconv.Itoa(freePortOn(c.t, ip, false))),
		GossipAddr:  net.JoinHostPort(ip, strconv.Itoa(freePortOn(c.t, ip, true))),
		MetricsAddr: net.JoinHostPort(ip, strconv.Itoa(freePortOn(c.t, ip, false))),
	}
	if c.Net != nil {
		nd.Advertise = c.Net.addProxy(i, nd.ClusterAddr)
	}
	c.Nodes = append(c.Nodes, nd)

	return nd
}

// serveArgs is a node's cluster command line, the same for every start.
func (c *Cluster) serveArgs(nd *ClusterNode) []string {
	args := []string{
		"--node-id", nd.ID,
		"--cluster-listen", nd.ClusterAddr,
		"--gossip-listen", nd.GossipAddr,
		"--metrics-listen", nd.MetricsAddr,
		"--join", c.join,
		"--bootstrap-expect", strconv.Itoa(c.size),
		// tokenless bootstrap-expect formation: plain TCP between nodes
		"--insecure-cluster",
	}
	if nd.Advertise != "" {
		args = append(args, "--cluster-advertise", nd.Advertise)
	}
	return append(args, c.cfg.extra...)
}

// AddNode starts one more node that joins the existing cluster with the
// same command line as the others, and waits for /health.
func (c *Cluster) AddNode() *ClusterNode {
	c.t.Helper()

	nd := c.newNode(len(c.Nodes) + 1)
	nd.ExtraArgs = c.serveArgs(nd)
	nd.Start()
	nd.setUp(true)

	return nd
}

// Node returns node i (1-based).
func (c *Cluster) Node(i int) *ClusterNode { return c.Nodes[i-1] }

// ByID returns the node with the given --node-id.
func (c *Cluster) ByID(id string) *ClusterNode {
	c.t.Helper()

	for _, nd := range c.Nodes {
		if nd.ID == id {
			return nd
		}
	}
	c.t.Fatalf("no node %q in the cluster", id)
	return nil
}

// Others returns the nodes other than the given ones.
func (c *Cluster) Others(except ...*ClusterNode) []*ClusterNode {
	var out []*ClusterNode
	for _, nd := range c.Nodes {
		skip := false
		for _, e := range except {
			skip = skip || e == nd
		}
		if !skip {
			out = append(out, nd)
		}
	}
	return out
}

func (c *Cluster) stopAll() {
	stopNodes(c.Nodes...)
	if c.Net != nil {
		c.Net.close()
	}
}

// startNodes starts the given nodes with their command lines, all before
// waiting for any (a node of a cluster answers /health once its peers are
// up).
func startNodes(nodes ...*ClusterNode) {
	for _, nd := range nodes {
		nd.Launch()
	}
	for _, nd := range nodes {
		nd.waitHealthy()
		nd.setUp(true)
	}
}

// stopNodes stops the given nodes at once (SIGTERM): one by one, the last
// ones would wait for a quorum that is already gone.
func stopNodes(nodes ...*ClusterNode) {
	var wg sync.WaitGroup
	for _, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nd.Stop()
		}()
	}
	wg.Wait()
}

// Kill crashes the node (SIGKILL).
func (n *ClusterNode) Kill() {
	n.t.Helper()

	n.setUp(false)
	n.Server.Kill()
}

// Stop terminates the node gracefully (SIGTERM).
func (n *ClusterNode) Stop() {
	n.setUp(false)
	n.Server.Stop()
}

// Restart starts the node again with the same command line and waits for
// /health.
func (n *ClusterNode) Restart() {
	n.t.Helper()

	n.Start()
	n.setUp(true)
}

// ---------------------------------------------------------------------------
// Cluster status

// clusterMember and clusterStatus mirror `halapi cluster status -o json`.
type clusterMember struct {
	ID           string `json:"id"`
	Role         string `json:"role"`
	State        string `json:"state"`
	RaftAddr     string `json:"raft_addr"`
	APIURL       string `json:"api_url"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Error        string `json:"error"`
}

type clusterStatus struct {
	NodeID       string          `json:"node_id"`
	State        string          `json:"state"`
	Leader       string          `json:"leader"`
	Term         uint64          `json:"term"`
	CommitIndex  uint64          `json:"commit_index"`
	AppliedIndex uint64          `json:"applied_index"`
	LastLogIndex uint64          `json:"last_log_index"`
	Healthy      bool            `json:"healthy"`
	Members      []clusterMember `json:"members"`
}

func (st clusterStatus) member(id string) (clusterMember, bool) {
	for _, m := range st.Members {
		if m.ID == id {
			return m, true
		}
	}
	return clusterMember{}, false
}

func (st clusterStatus) String() string {
	var ms []string
	for _, m := range st.Members {
		s := fmt.Sprintf("%s:%s/%s@%d", m.ID, m.Role, m.State, m.AppliedIndex)
		if m.Error != "" {
			s += "(" + m.Error + ")"
		}
		ms = append(ms, s)
	}
	return fmt.Sprintf("{node %s %s leader=%q term=%d commit=%d applied=%d last=%d members=[%s]}",
		st.NodeID, st.State, st.Leader, st.Term, st.CommitIndex, st.AppliedIndex, st.LastLogIndex, strings.Join(ms, " "))
}

// Status runs `halapi cluster status -o json` on the node.
func (n *ClusterNode) Status() (clusterStatus, error) {
	out, err := n.CLI("cluster", "status", "-o", "json")
	if err != nil {
		return clusterStatus{}, err
	}
	var st clusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return clusterStatus{}, fmt.Errorf("cluster status -o json: %w\n%s", err, out)
	}
	return st, nil
}

// MustStatus is Status that fails the test on error.
func (n *ClusterNode) MustStatus() clusterStatus {
	n.t.Helper()

	st, err := n.Status()
	if err != nil {
		n.t.Fatal(err)
	}
	return st
}

// WaitStable waits until every given node names the same leader, that
// leader is one of them, and each lists all of them as raft voters (role
// leader or follower). It returns the leader.
func (c *Cluster) WaitStable(timeout time.Duration, nodes ...*ClusterNode) *ClusterNode {
	c.t.Helper()

	var leader string
	waitFor(c.t, timeout, fmt.Sprintf("cluster of %s stable with a leader", nodeIDs(nodes)), func() (bool, string) {
		var ok bool
		var last string
		leader, ok, last = c.stable(nodes, false)
		return ok, last
	})

	return c.ByID(leader)
}

// CheckMembersAlive waits up to timeout until every given node's status
// lists all of them as alive (gossip) voters, and reports an error (the
// test goes on) if that does not happen.
func (c *Cluster) CheckMembersAlive(timeout time.Duration, nodes ...*ClusterNode) bool {
	c.t.Helper()

	ok, last := poll(timeout, func() (bool, string) {
		_, ok, last := c.stable(nodes, true)
		return ok, last
	})
	if !ok {
		c.t.Errorf("members %s not all alive voters in every node's cluster status within %s; last: %s",
			nodeIDs(nodes), timeout, last)
	}
	return ok
}

// stable is one round of WaitStable (and, with alive, CheckMembersAlive).
func (c *Cluster) stable(nodes []*ClusterNode, alive bool) (leader string, ok bool, descr string) {
	ok = true
	var views []string
	for _, nd := range nodes {
		st, err := nd.Status()
		if err != nil {
			return "", false, nd.ID + ": " + err.Error()
		}
		views = append(views, st.String())
		if st.Leader == "" || (leader != "" && st.Leader != leader) {
			ok = false
		}
		leader = st.Leader
		for _, other := range nodes {
			m, found := st.member(other.ID)
			if !found || (m.Role != "leader" && m.Role != "follower") || (alive && m.State != "alive") {
				ok = false
			}
		}
	}
	if !containsNode(nodes, leader) {
		ok = false
	}
	return leader, ok, strings.Join(views, "; ")
}

// poll is waitFor that reports instead of failing the test.
func poll(timeout time.Duration, cond func() (bool, string)) (bool, string) {
	var last string
	err := testharness.Poll(context.Background(), timeout, func() (bool, string) {
		var ok bool
		ok, last = cond()
		return ok, last
	})
	return err == nil, last
}

// Leader asks the node which node leads, waiting until it knows one.
func (c *Cluster) Leader(from *ClusterNode) *ClusterNode {
	c.t.Helper()

	var leader string
	waitFor(c.t, clusterFormTimeout, "node "+from.ID+" knows a leader", func() (bool, string) {
		st, err := from.Status()
		if err != nil {
			return false, err.Error()
		}
		leader = st.Leader
		return leader != "", st.String()
	})

	return c.ByID(leader)
}

// WaitCaughtUp waits until every given node has applied at least the commit
// index the leader (as seen from the first node) reports now.
func (c *Cluster) WaitCaughtUp(nodes ...*ClusterNode) uint64 {
	c.t.Helper()

	leader := c.Leader(nodes[0])
	target := leader.MustStatus().CommitIndex
	for _, nd := range nodes {
		waitFor(c.t, convergeTimeout, fmt.Sprintf("%s applied index >= leader %s commit index %d", nd.ID, leader.ID, target),
			func() (bool, string) {
				st, err := nd.Status()
				if err != nil {
					return false, err.Error()
				}
				return st.AppliedIndex >= target, st.String()
			})
	}

	return target
}

func nodeIDs(nodes []*ClusterNode) string {
	ids := make([]string, 0, len(nodes))
	for _, nd := range nodes {
		ids = append(ids, nd.ID)
	}
	return strings.Join(ids, ",")
}

func containsNode(nodes []*ClusterNode, id string) bool {
	for _, nd := range nodes {
		if nd.ID == id {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------
// Fault-injecting proxies

// FaultNet is a set of TCP proxies, one in front of each node's cluster
// port. A proxy knows the calling node from the connection's source address
// (127.0.0.<base+j>) and refuses, or cuts, connections between nodes that
// Partition separated.
type FaultNet struct {
	t       testing.TB
	base    int
	mu      sync.Mutex
	group   map[int]int // node → group; nodes in different groups are cut apart
	conns   map[*proxyConn]struct{}
	proxies []net.Listener
	wg      sync.WaitGroup
	refused atomic.Int64
}

type proxyConn struct {
	from, to   int
	client, up net.Conn
}

func newFaultNet(t testing.TB, base int) *FaultNet {
	return &FaultNet{t: t, base: base, group: map[int]int{}, conns: map[*proxyConn]struct{}{}}
}

// addProxy starts the proxy in front of node to's cluster address and
// returns the proxy's address.
func (f *FaultNet) addProxy(to int, target string) string {
	f.t.Helper()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.t.Fatalf("proxy listen: %v", err)
	}
	f.mu.Lock()
	f.proxies = append(f.proxies, ln)
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c, to, target)
		}
	}()

	return ln.Addr().String()
}

// nodeOf maps a source address to a node index (0: not a node).
func (f *FaultNet) nodeOf(a net.Addr) int {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return 0
	}
	ip := ta.IP.To4()
	if ip == nil || ip[0] != 127 || ip[1] != 0 || ip[2] != 0 {
		return 0
	}
	return int(ip[3]) - f.base
}

func (f *FaultNet) cut(from, to int) bool {
	if from <= 0 {
		return false
	}
	return f.group[from] != f.group[to]
}

func (f *FaultNet) serve(c net.Conn, to int, target string) {
	from := f.nodeOf(c.RemoteAddr())
	f.mu.Lock()
	cut := f.cut(from, to)
	f.mu.Unlock()
	if cut {
		f.refused.Add(1)
		c.Close()
		return
	}
	up, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	pc := &proxyConn{from: from, to: to, client: c, up: up}
	f.mu.Lock()
	if f.cut(from, to) { // partitioned while dialing
		f.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	f.conns[pc] = struct{}{}
	f.mu.Unlock()

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	c.Close()
	up.Close()
	<-done
	f.mu.Lock()
	delete(f.conns, pc)
	f.mu.Unlock()
}

// Partition cuts every node of one group off from the nodes of the other
// groups (both directions) and closes the connections already open between
// them. Nodes not listed form one more group together.
func (f *FaultNet) Partition(groups ...[]int) {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.group = map[int]int{}
	for g, nodes := range groups {
		for _, n := range nodes {
			f.group[n] = g + 1
		}
	}
	for pc := range f.conns {
		if f.cut(pc.from, pc.to) {
			pc.client.Close()
			pc.up.Close()
		}
	}
}

// Heal lets every node reach every other again.
func (f *FaultNet) Heal() {
	f.mu.Lock()
	f.group = map[int]int{}
	f.mu.Unlock()
}

func (f *FaultNet) close() {
	f.mu.Lock()
	for _, ln := range f.proxies {
		ln.Close()
	}
	for pc := range f.conns {
		pc.client.Close()
		pc.up.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// ---------------------------------------------------------------------------
// Client helpers shared by the cluster tests (they return errors instead of
// failing the test, so they can run in client goroutines).

// liveList returns every active decision the node serves to a bouncer
// (GET /v1/decisions with no filter).
func liveList(lb *csbouncer.LiveBouncer) ([]*models.Decision, error) {
	return call("Decisions.List", func(ctx context.Context) ([]*models.Decision, error) {
		r, _, err := lb.APIClient.Decisions.List(ctx, apiclient.DecisionsListOpts{})
		if err != nil || r == nil {
			return nil, err
		}
		return *r, nil
	})
}

// valueSet is the set of decision values of a list.
func valueSet(ds []*models.Decision) map[string]bool {
	out := map[string]bool{}
	for _, d := range ds {
		if d != nil {
			out[str(d.Value)] = true
		}
	}
	return out
}

// setDiff describes how got differs from want ("" when equal).
func setDiff(got, want map[string]bool) string {
	var missing, extra []string
	for v := range want {
		if !got[v] {
			missing = append(missing, v)
		}
	}
	for v := range got {
		if !want[v] {
			extra = append(extra, v)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return ""
	}
	return fmt.Sprintf("missing %v, unexpected %v", missing, extra)
}

// tryAddDecision pushes a cscli-style alert with one Ip ban.
func tryAddDecision(c *apiclient.ApiClient, ip string) error {
	_, err := call("Alerts.Add", func(ctx context.Context) (*models.AddAlertsResponse, error) {
		r, _, err := c.Alerts.Add(ctx, models.AddAlertsRequest{cscliAlert("Ip", ip, "1h", "ban", "e2e")})
		if err == nil && (r == nil || len(*r) != 1) {
			err = fmt.Errorf("Alerts.Add: unexpected answer %v", r)
		}
		return r, err
	})
	return err
}

// tryDeleteIP does `cscli decisions delete --ip` and returns nbDeleted.
func tryDeleteIP(c *apiclient.ApiClient, ip string) (int, error) {
	return call("Decisions.Delete", func(ctx context.Context) (int, error) {
		r, _, err := c.Decisions.Delete(ctx, apiclient.DecisionsDeleteOpts{IPEquals: ip})
		if err != nil {
			return 0, err
		}
		if r == nil {
			return 0, errors.New("Decisions.Delete: nil answer")
		}
		return strconv.Atoi(r.NbDeleted)
	})
}

// tryBarrier pushes an alert without decisions (remediation off, so no
// profile adds one): a write that the node acknowledges once it has
// applied it, used to make the next read on that node linearizable.
func tryBarrier(c *apiclient.ApiClient) error {
	a := agentAlert("198.51.100.250", "e2e/barrier", 1)
	a.Remediation = false
	_, err := call("Alerts.Add(barrier)", func(ctx context.Context) (*models.AddAlertsResponse, error) {
		r, _, err := c.Alerts.Add(ctx, models.AddAlertsRequest{a})
		return r, err
	})
	return err
}

// tryLiveGet is liveGet returning the error.
func tryLiveGet(lb *csbouncer.LiveBouncer, ip string) ([]*models.Decision, error) {
	return call("LiveBouncer.Get("+ip+")", func(ctx context.Context) ([]*models.Decision, error) {
		r, err := lb.Get(ctx, ip)
		if err != nil || r == nil {
			return nil, err
		}
		return *r, nil
	})
}

// ---------------------------------------------------------------------------
// Stream bouncers that keep running while nodes come and go

// streamTracker runs a go-cs-bouncer StreamBouncer and applies every answer
// to a decision set, as a firewall bouncer does: new decisions are added,
// deleted ones removed (by decision id; within one answer "deleted" wins).
// A decision that comes back in "new" after it was deleted is recorded as
// a violation. Duplicates are allowed.
type streamTracker struct {
	name string
	b    *csbouncer.StreamBouncer

	mu         sync.Mutex
	live       map[int64]string // id → value
	deleted    map[int64]bool
	answers    int
	violations []string
}

// startTrackedStream starts a StreamBouncer on url with key (polling every
// 200ms) and a goroutine applying its answers, until the test ends.
func startTrackedStream(t testing.TB, name, url, key string) *streamTracker {
	t.Helper()

	b := &csbouncer.StreamBouncer{
		APIKey:         key,
		APIUrl:         url,
		TickerInterval: "200ms",
		UserAgent:      "e2e-cluster-bouncer/v0.0.21",
	}
	if err := b.Init(); err != nil {
		t.Fatalf("StreamBouncer.Init: %v", err)
	}
	st, _ := runTrackedStream(t, name, b)
	return st
}

func (st *streamTracker) apply(resp *models.DecisionsStreamResponse) {
	if resp == nil {
		resp = &models.DecisionsStreamResponse{}
	}
	st.mu.Lock()
	defer st.mu.Unlock()

	st.answers++
	for _, d := range resp.New {
		if d == nil {
			continue
		}
		if st.deleted[d.ID] {
			st.violations = append(st.violations, fmt.Sprintf("answer %d: decision %d (%s) in new after it was deleted",
				st.answers, d.ID, str(d.Value)))
			continue
		}
		st.live[d.ID] = str(d.Value)
	}
	for _, d := range resp.Deleted {
		if d == nil {
			continue
		}
		st.deleted[d.ID] = true
		delete(st.live, d.ID)
	}
}

// values is the set of values the bouncer currently blocks.
func (st *streamTracker) values() map[string]bool {
	st.mu.Lock()
	defer st.mu.Unlock()

	out := map[string]bool{}
	for _, v := range st.live {
		out[v] = true
	}
	return out
}

func (st *streamTracker) answerCount() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.answers
}

func (st *streamTracker) problems() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return append([]string(nil), st.violations...)
}

// waitValues waits until the bouncer's set equals want.
func (st *streamTracker) waitValues(t testing.TB, timeout time.Duration, want map[string]bool) {
	t.Helper()

	waitFor(t, timeout, st.name+": decision set equals the live active set", func() (bool, string) {
		d := setDiff(st.values(), want)
		return d == "", fmt.Sprintf("%d answers; %s", st.answerCount(), d)
	})
}
