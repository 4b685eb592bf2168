package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

const (
	// minorityRefuseBound bounds the answer to a write on a node cut off
	// from the majority: failure detection (~0.5 s), the server's wait
	// for a leader (~3 s), margin.
	minorityRefuseBound = 8 * time.Second
	// majorityWriteBound bounds a write on the majority side, an election
	// included.
	majorityWriteBound = 8 * time.Second
)

// rawAnswer is an HTTP answer seen without a client library (the crowdsec
// client retries 503 answers for a minute, hiding them).
type rawAnswer struct {
	code       int
	retryAfter string
	body       string
	took       time.Duration
}

func (a rawAnswer) String() string {
	return fmt.Sprintf("status %d (Retry-After %q) after %s: %s", a.code, a.retryAfter, a.took.Round(time.Millisecond), a.body)
}

// rawCall sends one request with a watcher's bearer token, no retries.
func rawCall(method, u, token string, body any) (rawAnswer, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return rawAnswer{}, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return rawAnswer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("User-Agent", watcherUA)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return rawAnswer{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return rawAnswer{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), body: string(b), took: time.Since(start)}, nil
}

// partitionNode is a node with its clients.
type partitionNode struct {
	*ClusterNode
	w      *apiclient.ApiClient
	token  string
	lb     *csbouncer.LiveBouncer
	stream *streamTracker
}

// TestClusterPartition cuts one follower, then the leader, off from the two
// other nodes (raft and forwarding connections, through the fault proxies):
// the cut-off node refuses writes with 503 within a bound but keeps
// answering reads (live queries, bouncer stream) with the data it had, the
// majority keeps accepting writes, and after healing the cut-off node
// converges. Writes it refused never take effect.
func TestClusterPartition(t *testing.T) {
	const (
		password  = "e2e-partition-password-0123456789abcdef"
		readerKey = "e2e-partition-reader-key-0123456789abcdef"
	)

	c := StartCluster(t, 3, 20, WithFaultProxies())
	addBouncer(t, c.Node(1).Server, "reader", readerKey)
	nodes := make([]*partitionNode, len(c.Nodes))
	for i, nd := range c.Nodes {
		machine := "cscli-" + nd.ID
		streamKey := fmt.Sprintf("e2e-partition-stream-%s-key-0123456789abcdef", nd.ID)
		addBouncer(t, nd.Server, "stream-"+nd.ID, streamKey)
		pn := &partitionNode{
			ClusterNode: nd,
			w:           addMachine(t, nd.Server, machine, password),
			lb:          newLiveBouncer(t, nd.Server, readerKey),
		}
		pn.token = loginToken(t, nd.Server, machine, password)
		pn.stream = startTrackedStream(t, "stream bouncer on "+nd.ID, nd.URL, streamKey)
		nodes[i] = pn
	}
	byNode := func(nd *ClusterNode) *partitionNode { return nodes[nd.Index-1] }

	// Some data everywhere before the first cut.
	for i := range 6 {
		pn := nodes[i%len(nodes)]
		if err := tryAddDecision(pn.w, fmt.Sprintf("172.16.0.%d", i+1)); err != nil {
			t.Fatalf("add on %s: %v", pn.ID, err)
		}
	}

	leader := c.Leader(c.Node(1))
	var follower *ClusterNode
	for _, nd := range c.Others(leader) {
		follower = nd
		break
	}

	// The cluster helpers fail the test they were created with, so the two
	// phases are not subtests.
	partitionPhase(t, c, byNode(follower), byNode, 1)
	partitionPhase(t, c, byNode(c.Leader(c.Node(1))), byNode, 2)
}

// partitionPhase cuts iso off from the other nodes, checks both sides, heals
// and checks convergence.
func partitionPhase(t *testing.T, c *Cluster, iso *partitionNode, byNode func(*ClusterNode) *partitionNode, phase int) {
	var majority []*partitionNode
	for _, nd := range c.Others(iso.ClusterNode) {
		majority = append(majority, byNode(nd))
	}
	wasLeader := c.Leader(c.Node(1)) == iso.ClusterNode

	// Everyone has everything before the cut.
	c.WaitCaughtUp(c.Nodes...)
	before, err := liveList(iso.lb)
	if err != nil {
		t.Fatalf("live list on %s: %v", iso.ID, err)
	}
	beforeSet := valueSet(before)
	iso.stream.waitValues(t, streamWait, beforeSet)

	t.Logf("phase %d: cutting %s (leader: %v) off from %s", phase, iso.ID, wasLeader, nodeIDs(c.Others(iso.ClusterNode)))
	c.Net.Partition([]int{iso.Index})
	defer c.Net.Heal()

	// The majority elects a leader among itself (at once when a follower
	// was cut off) and keeps accepting writes.
	var majNodes []*ClusterNode
	for _, pn := range majority {
		majNodes = append(majNodes, pn.ClusterNode)
	}
	newLeader := c.WaitStable(clusterFormTimeout, majNodes...)
	t.Logf("majority leader: %s", newLeader.ID)
	var added []string
	for i, pn := range majority {
		for k := range 3 {
			ip := fmt.Sprintf("172.16.%d.%d", 10*phase+i, k+1)
			start := time.Now()
			if err := tryAddDecision(pn.w, ip); err != nil {
				t.Fatalf("majority write on %s during the partition: %v", pn.ID, err)
			}
			if took := time.Since(start); took > majorityWriteBound {
				t.Errorf("majority write on %s took %s, want within %s", pn.ID, took, majorityWriteBound)
			}
			added = append(added, ip)
		}
	}
	// One of the decisions the cut-off node knows is deleted on the
	// majority side.
	var deleted string
	for v := range beforeSet {
		deleted = v
		break
	}
	if n, err := tryDeleteIP(majority[0].w, deleted); err != nil || n != 1 {
		t.Fatalf("majority delete of %s on %s: nbDeleted %d, err %v; want 1", deleted, majority[0].ID, n, err)
	}

	// The cut-off node refuses writes: 503 with Retry-After, within a
	// bound. A new decision...
	refusedIP := fmt.Sprintf("172.16.%d.99", 10*phase+9)
	ans, err := rawCall(http.MethodPost, iso.URL+"v1/alerts", iso.token,
		[]*models.Alert{cscliAlert("Ip", refusedIP, "1h", "ban", "e2e")})
	switch {
	case err != nil:
		t.Errorf("write on cut-off %s: %v", iso.ID, err)
	case ans.code != http.StatusServiceUnavailable || ans.retryAfter == "":
		t.Errorf("write on cut-off %s: %s; want 503 with Retry-After", iso.ID, ans)
	case ans.took > minorityRefuseBound:
		t.Errorf("write on cut-off %s answered 503 after %s, want within %s", iso.ID, ans.took, minorityRefuseBound)
	default:
		t.Logf("write on cut-off %s: %s", iso.ID, ans)
	}
	// ...and the deletion of a decision the majority added meanwhile
	// (which the cut-off node has not seen: answering "0 deleted" from its
	// own state would be a lie the majority never agreed to).
	ans, err = rawCall(http.MethodDelete, iso.URL+"v1/decisions?ip="+url.QueryEscape(added[0]), iso.token, nil)
	switch {
	case err != nil:
		t.Errorf("delete on cut-off %s: %v", iso.ID, err)
	case ans.code != http.StatusServiceUnavailable:
		t.Errorf("DELETE /v1/decisions?ip=%s (added on the majority during the partition) on cut-off %s: %s; want 503",
			added[0], iso.ID, ans)
	case ans.took > minorityRefuseBound:
		t.Errorf("delete on cut-off %s answered 503 after %s, want within %s", iso.ID, ans.took, minorityRefuseBound)
	}

	// The cut-off node still serves reads, with the data it had.
	got, err := liveList(iso.lb)
	if err != nil {
		t.Errorf("live list on cut-off %s: %v", iso.ID, err)
	} else if d := setDiff(valueSet(got), beforeSet); d != "" {
		t.Errorf("live list on cut-off %s: %s compared to before the cut", iso.ID, d)
	}
	for v := range beforeSet {
		ds, err := tryLiveGet(iso.lb, v)
		if err != nil || len(decisionsFor(ds, v)) == 0 {
			t.Errorf("live query %s on cut-off %s: %s, err %v; want its decision", v, iso.ID, fmtDecisions(ds), err)
		}
		break
	}
	answers := iso.stream.answerCount()
	waitFor(t, streamWait, "stream bouncer on cut-off "+iso.ID+" keeps getting answers", func() (bool, string) {
		n := iso.stream.answerCount()
		return n >= answers+3, fmt.Sprintf("%d answers since the cut", n-answers)
	})
	if d := setDiff(iso.stream.values(), beforeSet); d != "" {
		t.Errorf("stream bouncer on cut-off %s: %s compared to before the cut", iso.ID, d)
	}
	if refused := c.Net.refused.Load(); refused == 0 {
		t.Errorf("the proxies refused no connection: the partition did not happen")
	}

	// Healing: the cut-off node converges on the majority's data; the
	// write it refused never happened.
	c.Net.Heal()
	c.WaitStable(clusterFormTimeout, c.Nodes...)
	want, err := liveList(majority[0].lb)
	if err != nil {
		t.Fatalf("live list on %s: %v", majority[0].ID, err)
	}
	wantSet := valueSet(want)
	for _, ip := range added {
		if !wantSet[ip] {
			t.Errorf("majority write %s missing after healing", ip)
		}
	}
	if wantSet[deleted] {
		t.Errorf("decision %s deleted on the majority is back after healing", deleted)
	}
	if wantSet[refusedIP] {
		t.Errorf("write refused with 503 by cut-off %s took effect: %s is banned", iso.ID, refusedIP)
	}
	waitFor(t, convergeTimeout, iso.ID+" converges after healing", func() (bool, string) {
		got, err := liveList(iso.lb)
		if err != nil {
			return false, err.Error()
		}
		d := setDiff(valueSet(got), wantSet)
		return d == "", d
	})
	for _, pn := range byNodes(c, byNode) {
		pn.stream.waitValues(t, streamWait, wantSet)
		if p := pn.stream.problems(); len(p) > 0 {
			t.Errorf("%s: %v", pn.stream.name, p)
		}
	}
}

func byNodes(c *Cluster, byNode func(*ClusterNode) *partitionNode) []*partitionNode {
	out := make([]*partitionNode, 0, len(c.Nodes))
	for _, nd := range c.Nodes {
		out = append(out, byNode(nd))
	}
	return out
}
