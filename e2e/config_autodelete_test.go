package e2e

import (
	"net/http"
	"testing"
	"time"
)

// TestConfigAutoDeleteReplicated: with --flush-bouncers-autodelete-api-key
// the leader deletes, on every node of a 3-node cluster, an API-key bouncer
// that has not pulled for that long; a bouncer that never pulled is kept
// (CrowdSec's flush), and the deleted bouncer's key is refused. Address
// base 140.
func TestConfigAutoDeleteReplicated(t *testing.T) {
	c := StartCluster(t, 3, 140, WithServeArgs("--flush-interval", "200ms", "--flush-bouncers-autodelete-api-key", "3s"))
	leader := c.Leader(c.Node(1))
	follower := c.Others(leader)[0]

	addBouncer(t, follower.Server, "fw-stale", "e2e-autodelete-key-stale-0123456789")
	addBouncer(t, follower.Server, "fw-never", "e2e-autodelete-key-never-0123456789")
	lb := newLiveBouncer(t, follower.Server, "e2e-autodelete-key-stale-0123456789")
	if code, _, err := liveStatus(lb, "1.2.3.4"); code != http.StatusOK {
		t.Fatalf("first pull: %d %v", code, err)
	}
	pulled := time.Now()

	waitFor(t, 20*time.Second, "fw-stale auto-deleted on every node", func() (bool, string) {
		for _, nd := range c.Nodes {
			if _, ok := nd.listedObject("bouncers", "fw-stale"); ok {
				return false, nd.ID + " still lists fw-stale"
			}
		}
		return true, ""
	})
	if since := time.Since(pulled); since < 3*time.Second {
		t.Fatalf("deleted %s after its last pull, before the 3s age", since)
	}
	for _, nd := range c.Nodes {
		if _, ok := nd.listedObject("bouncers", "fw-never"); !ok {
			t.Errorf("%s: the bouncer that never pulled was deleted", nd.ID)
		}
	}
	for _, nd := range c.Nodes {
		code, _, _ := liveStatus(newLiveBouncer(t, nd.Server, "e2e-autodelete-key-stale-0123456789"), "1.2.3.4")
		if code != http.StatusForbidden {
			t.Errorf("%s: deleted bouncer's key answered %d, want 403", nd.ID, code)
		}
	}
}
