package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/internal/testharness"
)

// scrapeSum sums the samples of a metric whose labels contain match from
// a node's --metrics-listen /metrics.
func scrapeSum(t testing.TB, nd *ClusterNode, name, match string) float64 {
	t.Helper()
	sum, err := testharness.ScrapeSum(context.Background(), "http://"+nd.MetricsAddr+"/metrics", name, match)
	if err != nil {
		t.Fatalf("%s /metrics: %v", nd.ID, err)
	}
	return sum
}

// TestScaleTouchesGatheredOnLeader: bouncers polling every node of a
// 3-node cluster cost the cluster about one raft entry per second for
// their cursors and last pulls (the followers relay to the leader, which
// writes one Touch), and what a follower served reaches the replicated
// state (the leader lists the last pull of a bouncer that only polled a
// follower).
func TestScaleTouchesGatheredOnLeader(t *testing.T) {
	c := StartCluster(t, 3, 90)
	leader := c.WaitStable(60*time.Second, c.Nodes...)
	const bouncers = 9
	keys := make([]string, bouncers)
	for i := range keys {
		keys[i] = fmt.Sprintf("scale-relay-key-%02d-0123456789abcdef", i)
		addBouncer(t, leader.Server, fmt.Sprintf("relay-%02d", i), keys[i])
	}
	c.WaitCaughtUp(c.Nodes...)
	followers := c.Others(leader)

	// bouncer i polls node i mod 3 (bouncer 0: a follower) every 100 ms.
	nodes := []*ClusterNode{followers[0], followers[1], leader}
	poll := func(nd *ClusterNode, key string, startup bool) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, nd.URL+"v1/decisions/stream?startup="+strconv.FormatBool(startup), nil)
		req.Header.Set("X-Api-Key", key)
		req.Header.Set("User-Agent", "e2e-scale-poller/v0.0.1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: status %d", nd.ID, resp.StatusCode)
		}
		return nil
	}
	// First contact (IP, user agent) is written at once, as a bouncer
	// update (not a touch).
	for i, key := range keys {
		if err := poll(nodes[i%3], key, true); err != nil {
			t.Fatal(err)
		}
	}

	const window = 6 * time.Second
	touch0 := 0.0
	for _, nd := range c.Nodes {
		touch0 += scrapeSum(t, nd, "halapi_raft_entries_appended_total", `command="touch"`)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, bouncers)
	for i, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < window {
				if err := poll(nodes[i%3], key, false); err != nil {
					errs <- err
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("poll: %v", err)
	}
	touch1 := 0.0
	for _, nd := range c.Nodes {
		touch1 += scrapeSum(t, nd, "halapi_raft_entries_appended_total", `command="touch"`)
	}
	elapsed := time.Since(start)
	entries := touch1 - touch0
	// One Touch per second for the cluster (plus one for a flush at each
	// edge of the window); one per node per second would be ~3x that.
	if max := elapsed.Seconds() + 2; entries > max || entries < 1 {
		t.Errorf("%.0f touch entries in %s for %d bouncers polling 3 nodes every 100 ms: want 1..%.0f (one per second for the cluster)",
			entries, elapsed.Round(time.Millisecond), bouncers, max)
	}
	for _, f := range followers {
		if n := scrapeSum(t, f, "halapi_touches_relayed_total", ""); n < 1 {
			t.Errorf("follower %s relayed no touches to the leader", f.ID)
		}
	}
	// relay-00 polled followers[0] only: the leader lists its last pull.
	leader.waitListed("bouncers", "relay-00", "last pull replicated from a follower", fieldSet("last_pull"))
}
