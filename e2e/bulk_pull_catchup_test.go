package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
	"github.com/halapi/halapi/internal/testharness"
)

// bulkBase is this file's e2e address base (127.0.0.56…).
const bulkBase = 55

// A 3-node cluster pulls a blocklist from a fake CAPI (compact ImportList
// entries in address order), a follower serves all of it to a real
// go-cs-bouncer client, and a fourth node that joins after every node
// compacted its log installs a (compressed) snapshot and serves it too.
func TestBulkPullThenNewNodeCatchesUpFromSnapshot(t *testing.T) {
	const n = 20000
	fake := capitest.New()
	t.Cleanup(fake.Close)
	login, password := "bulk-e2e", "bulk-e2e-password-0123456789"
	fake.AddWatcher(login, password)
	creds := filepath.Join(t.TempDir(), "online_api_credentials.yaml")
	if err := os.WriteFile(creds, fmt.Appendf(nil, "url: %s\nlogin: %s\npassword: %s\n", fake.BaseURL(), login, password), 0o600); err != nil {
		t.Fatal(err)
	}
	values := make([]string, n)
	for i := range values {
		x := uint32(uint64(i) * 2654435761 % (1 << 16)) // scattered, distinct
		values[i] = fmt.Sprintf("100.64.%d.%d", x>>8, x&0xff)
	}
	fake.SetBlocklist("bulk", values)
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{
		fake.BlocklistLink("bulk", "ban", "Ip", "24h")}}})

	c := StartCluster(t, 3, bulkBase, WithServeArgs("--capi-credentials", creds, "--capi-pull-interval", "1h",
		"--capi-push-interval", "1h", "--capi-metrics-interval", "1h", "--raft-trailing-logs", "2"))
	leader := c.Leader(c.Node(1))
	var follower *ClusterNode
	for _, nd := range c.Nodes {
		if nd != leader {
			follower = nd
			break
		}
	}
	// the pull waits for a machine with scenarios: log one in
	agent := addMachine(t, leader.Server, "bulk-agent", "bulk-agent-password-0123456789")
	mustCall(t, "HeartBeat.Ping", func(ctx context.Context) (bool, error) {
		ok, _, err := agent.HeartBeat.Ping(ctx)
		return ok, err
	})
	key := "bulk-bouncer-key-0123456789abcdef"
	addBouncer(t, leader.Server, "bulk-bouncer", key)

	serves := func(nd *ClusterNode) func() (bool, string) {
		lb := newLiveBouncer(t, nd.Server, key)
		return func() (bool, string) {
			ds, err := liveList(lb)
			if err != nil {
				return false, err.Error()
			}
			got := valueSet(ds)
			for _, v := range values {
				if !got[v] {
					return false, fmt.Sprintf("%s serves %d decisions, %s missing", nd.ID, len(got), v)
				}
			}
			return len(got) == n, fmt.Sprintf("%s serves %d decisions", nd.ID, len(got))
		}
	}
	waitFor(t, 90*time.Second, "a follower serving the whole blocklist", serves(follower))

	// every node compacts its log: whichever leads must send a snapshot
	for _, nd := range c.Nodes {
		nd.MustCLI("cluster", "snapshot")
	}
	n4 := c.AddNode()
	waitFor(t, 90*time.Second, "the new node serving the whole blocklist", serves(n4))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, err := testharness.ScrapeSum(ctx, "http://"+n4.MetricsAddr+"/metrics", "halapi_raft_last_snapshot_index", "")
	if err != nil {
		t.Fatal(err)
	}
	if idx <= 0 {
		t.Errorf("the new node caught up without installing a snapshot (last snapshot index %s)", strconv.FormatFloat(idx, 'f', -1, 64))
	}
	// the snapshot it received is compressed (every voter applies ImportList)
	if !compressedSnapshotIn(t, n4.DataDir) {
		t.Error("the snapshot the new node installed is not s2-compressed")
	}
}

// compressedSnapshotIn reports whether a raft snapshot (state.bin) under dir
// is an s2 stream.
func compressedSnapshotIn(t *testing.T, dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.Name() != "state.bin" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		head := make([]byte, 10)
		if n, _ := f.Read(head); n == 10 && string(head) == "\xff\x06\x00\x00S2sTwO" {
			found = true
		}
		return nil
	})
	return found
}
