package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// raftSnapshot is the part of a raft snapshot's meta.json the tests read.
type raftSnapshot struct {
	ID    string `json:"ID"`
	Index uint64 `json:"Index"`
	Term  uint64 `json:"Term"`
}

// raftSnapshots lists the snapshots in a node's data dir (hashicorp/raft's
// file snapshot store: DATA/raft/snapshots/*/meta.json), newest first.
func raftSnapshots(t testing.TB, nd *ClusterNode) []raftSnapshot {
	t.Helper()

	paths, err := filepath.Glob(filepath.Join(nd.DataDir, "raft", "snapshots", "*", "meta.json"))
	if err != nil {
		t.Fatalf("list snapshots of %s: %v", nd.ID, err)
	}
	var out []raftSnapshot
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // being written or reaped
		}
		var s raftSnapshot
		if err := json.Unmarshal(b, &s); err == nil {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index > out[j].Index })
	return out
}

// memberIDs lists the member ids of a status, sorted.
func memberIDs(st clusterStatus) []string {
	var ids []string
	for _, m := range st.Members {
		ids = append(ids, m.ID)
	}
	slices.Sort(ids)
	return ids
}

// clusterData is what must be identical on every node.
type clusterData struct {
	decisions map[string]bool
	alerts    []int
}

func readClusterData(t testing.TB, nd *ClusterNode, w *apiclient.ApiClient, lb *csbouncer.LiveBouncer) clusterData {
	t.Helper()

	ds, err := liveList(lb)
	if err != nil {
		t.Fatalf("live list on %s: %v", nd.ID, err)
	}
	ids := alertIDs(listAlerts(t, w, nil))
	slices.Sort(ids)
	return clusterData{decisions: valueSet(ds), alerts: ids}
}

func (d clusterData) diff(o clusterData) string {
	s := setDiff(d.decisions, o.decisions)
	if !slices.Equal(d.alerts, o.alerts) {
		if s != "" {
			s += "; "
		}
		s += fmt.Sprintf("%d alerts %v vs %d alerts %v", len(d.alerts), summarizeIDs(d.alerts), len(o.alerts), summarizeIDs(o.alerts))
	}
	return s
}

func summarizeIDs(ids []int) string {
	if len(ids) == 0 {
		return "[]"
	}
	return fmt.Sprintf("[%d..%d]", ids[0], ids[len(ids)-1])
}

// TestClusterLifecycle: a whole-cluster restart keeps everything and elects
// a leader; a 4th node joins as a voter and gets all the data; `cluster
// remove` takes a member out; a node that was down while the others wrote
// far more entries than they keep after a snapshot catches up (through a
// snapshot install) when it comes back with the same command line.
func TestClusterLifecycle(t *testing.T) {
	const (
		machine   = "cscli-lifecycle"
		password  = "e2e-lifecycle-password-0123456789abcdef"
		key       = "e2e-lifecycle-bouncer-key-0123456789abcdef"
		threshold = 50
		trailing  = 10
	)

	c := StartCluster(t, 3, 40, WithServeArgs(
		"--raft-snapshot-threshold", fmt.Sprint(threshold),
		"--raft-trailing-logs", fmt.Sprint(trailing)))
	n1 := c.Node(1)
	addBouncer(t, n1.Server, "lifecycle", key)
	n1.MustCLI("machines", "add", machine, "--password", password)
	clients := map[*ClusterNode]*apiclient.ApiClient{}
	bouncers := map[*ClusterNode]*csbouncer.LiveBouncer{}
	clientsOf := func(nd *ClusterNode) (*apiclient.ApiClient, *csbouncer.LiveBouncer) {
		if clients[nd] == nil {
			clients[nd] = newWatcher(t, nd.Server, machine, password)
			bouncers[nd] = newLiveBouncer(t, nd.Server, key)
		}
		return clients[nd], bouncers[nd]
	}
	dataOn := func(nd *ClusterNode) clusterData {
		w, lb := clientsOf(nd)
		return readClusterData(t, nd, w, lb)
	}
	addOn := func(nd *ClusterNode, ips ...string) {
		t.Helper()
		w, _ := clientsOf(nd)
		for _, ip := range ips {
			if err := tryAddDecision(w, ip); err != nil {
				t.Fatalf("add %s on %s: %v", ip, nd.ID, err)
			}
		}
	}
	ipRange := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s.%d.%d", prefix, i/250, i%250+1))
		}
		return out
	}
	sameDataEverywhere := func(what string, nodes ...*ClusterNode) clusterData {
		t.Helper()
		c.WaitCaughtUp(nodes...)
		ref := dataOn(nodes[0])
		for _, nd := range nodes[1:] {
			if d := dataOn(nd).diff(ref); d != "" {
				t.Errorf("%s: data on %s differs from %s: %s", what, nd.ID, nodes[0].ID, d)
			}
		}
		return ref
	}

	for i, nd := range c.Nodes {
		addOn(nd, ipRange(fmt.Sprintf("12.%d", i+1), 5)...)
	}
	w1, _ := clientsOf(n1)
	gone := ipRange("12.9", 2)
	addOn(n1, gone...)
	if n, err := tryDeleteIP(w1, gone[0]); err != nil || n != 1 {
		t.Fatalf("delete %s: nbDeleted %d, err %v", gone[0], n, err)
	}
	token := loginToken(t, n1.Server, machine, password)
	before := sameDataEverywhere("before the whole-cluster restart", c.Nodes...)
	if len(before.decisions) != 16 || before.decisions[gone[0]] {
		t.Fatalf("before the restart: %d active decisions %v, want the 16 added and not deleted", len(before.decisions), before.decisions)
	}

	// Whole-cluster restart: SIGTERM all three, start all three again with
	// the same command lines.
	{
		t.Log("whole-cluster restart")
		stopNodes(c.Nodes...)
		startNodes(c.Nodes...)
		leader := c.WaitStable(clusterFormTimeout, c.Nodes...)
		c.CheckMembersAlive(gossipSettle, c.Nodes...)
		t.Logf("leader after the restart: %s", leader.ID)
		for _, nd := range c.Nodes {
			if d := dataOn(nd).diff(before); d != "" {
				t.Errorf("after the whole-cluster restart, data on %s: %s", nd.ID, d)
			}
			if code := heartbeatWithToken(t, nd.Server, token); code != http.StatusOK {
				t.Errorf("heartbeat on %s with a token issued before the restart: %d, want 200", nd.ID, code)
			}
			if _, ok := nd.listedObject("machines", machine); !ok {
				t.Errorf("machines list on %s: %s missing after the restart", nd.ID, machine)
			}
		}
		// Writes work again.
		addOn(c.Node(2), "12.8.0.1")
	}

	// A fourth node joins with the same kind of command line and becomes a
	// voter with all the data.
	t.Log("adding a fourth node")
	n4 := c.AddNode()
	{
		leader := c.WaitStable(clusterFormTimeout, c.Nodes...)
		c.CheckMembersAlive(gossipSettle, c.Nodes...)
		st := leader.MustStatus()
		if m, ok := st.member(n4.ID); !ok || (m.Role != "follower" && m.Role != "leader") {
			t.Fatalf("leader's status: %s; want %s as a voter", st, n4.ID)
		}
		addOn(n4, "12.8.0.2") // a write through the new node
		sameDataEverywhere("after adding "+n4.ID, c.Nodes...)
	}

	// The cluster from here on: n1, n2 and n4.
	n2, n3 := c.Node(2), c.Node(3)
	members := []*ClusterNode{n1, n2, n4}
	{
		// Removing the leader hands leadership over first and asks for the
		// command again.
		t.Logf("removing %s", n3.ID)
		waitFor(t, clusterFormTimeout, "cluster remove "+n3.ID, func() (bool, string) {
			out, err := n1.CLI("cluster", "remove", n3.ID)
			if err != nil {
				return false, err.Error()
			}
			t.Logf("cluster remove %s: %s", n3.ID, out)
			return true, out
		})
		want := []string{n1.ID, n2.ID, n4.ID}
		threeMembers := func() (bool, string) {
			var views []string
			ok := true
			for _, nd := range members {
				st, err := nd.Status()
				if err != nil {
					return false, err.Error()
				}
				views = append(views, st.String())
				ok = ok && slices.Equal(memberIDs(st), want)
			}
			return ok, strings.Join(views, "; ")
		}
		// The removed node is still running: it must not show up as a
		// member any more (it is told it was removed and leaves gossip).
		if ok, last := poll(gossipSettle, threeMembers); !ok {
			t.Errorf("`cluster remove %s` with %s still running: status does not list exactly %v within %s; last: %s",
				n3.ID, n3.ID, want, gossipSettle, last)
		}
		n3.Stop()
		waitFor(t, clusterFormTimeout, "status lists the three remaining members once "+n3.ID+" is stopped", threeMembers)
		c.WaitStable(clusterFormTimeout, members...)
		addOn(n2, "12.8.0.3")
		sameDataEverywhere("after removing "+n3.ID, members...)
	}

	// A node down while the others write far more than they keep after a
	// snapshot catches up when it comes back. It is n1, whose --join names
	// its own gossip address (the others join it): on its return it must
	// find the others again.
	{
		t.Logf("%s down while the others write", n1.ID)
		down := n1
		up := []*ClusterNode{n2, n4}
		lastBefore := down.MustStatus().LastLogIndex
		down.Kill()
		c.WaitStable(clusterFormTimeout, up...)
		waitFor(t, clusterFormTimeout, "the others see "+down.ID+" gone", func() (bool, string) {
			st, err := n2.Status()
			if err != nil {
				return false, err.Error()
			}
			m, _ := st.member(down.ID)
			return m.State == "dead" || m.State == "left", st.String()
		})

		// Far more entries than a snapshot keeps, and snapshots on both.
		addOn(n2, ipRange("12.20", 2*threshold)...)
		addOn(n4, ipRange("12.21", threshold)...)
		for _, nd := range up {
			nd.MustCLI("cluster", "snapshot")
		}
		addOn(n2, ipRange("12.22", 5)...)
		leader := c.Leader(n2)
		snaps := raftSnapshots(t, leader)
		if len(snaps) == 0 {
			t.Fatalf("no snapshot in %s's data dir after `cluster snapshot`", leader.ID)
		}
		leaderSnap := snaps[0]
		if leaderSnap.Index <= lastBefore+trailing {
			t.Fatalf("leader %s's snapshot at index %d: not past %s's last index %d + %d trailing entries",
				leader.ID, leaderSnap.Index, down.ID, lastBefore, trailing)
		}
		t.Logf("%s down at last index %d; leader %s snapshot %s at index %d", down.ID, lastBefore, leader.ID, leaderSnap.ID, leaderSnap.Index)

		down.Restart()
		target := c.WaitCaughtUp(n2, n4, down)
		st := down.MustStatus()
		t.Logf("%s after restart: %s (leader commit index was %d)", down.ID, st, target)
		want := sameDataEverywhere(down.ID+" caught up", n2, n4, down)
		if len(want.decisions) < 16+3*threshold {
			t.Errorf("only %d active decisions after the catch-up", len(want.decisions))
		}
		// The leader no longer had the entries the node missed: it must
		// have received the leader's snapshot.
		installed := false
		for _, s := range raftSnapshots(t, down) {
			installed = installed || (s.Index == leaderSnap.Index && s.Term == leaderSnap.Term)
		}
		if !installed {
			t.Errorf("%s holds no copy of the leader's snapshot %s (index %d): %+v", down.ID, leaderSnap.ID, leaderSnap.Index, raftSnapshots(t, down))
		}
		c.WaitStable(clusterFormTimeout, members...)
		c.CheckMembersAlive(gossipSettle, members...)
	}
}
