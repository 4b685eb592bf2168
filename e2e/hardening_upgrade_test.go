package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upgradeBaseline is the commit the rolling upgrade starts from (main when
// feature gating was introduced).
const upgradeBaseline = "d51193e"

// buildBaseline builds halapi at upgradeBaseline into a temp dir (a git
// worktree of this repository); it skips the test when git history is
// not available.
func buildBaseline(t *testing.T) string {
	t.Helper()
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("git", "-C", repo, "cat-file", "-e", upgradeBaseline+"^{commit}").CombinedOutput(); err != nil {
		t.Skipf("git history with %s not available (%v: %s): cannot build the baseline binary", upgradeBaseline, err, out)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if out, err := exec.Command("git", "-C", repo, "worktree", "add", "--detach", src, upgradeBaseline).CombinedOutput(); err != nil {
		t.Skipf("git worktree add %s: %v: %s", upgradeBaseline, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("git", "-C", repo, "worktree", "remove", "--force", src).Run() })
	bin := filepath.Join(dir, "halapi-"+upgradeBaseline)
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/halapi")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build baseline %s: %v: %s", upgradeBaseline, err, out)
	}
	return bin
}

// A 3-node cluster of the baseline binary is upgraded to the binary under
// test one node at a time (SIGTERM, restart on the same data dir) while
// writers keep adding decisions through the live nodes; afterwards every
// acknowledged decision is on every node.
func TestRollingUpgradeKeepsAckedWrites(t *testing.T) {
	oldBin := buildBaseline(t)
	newBin := halapiBin
	halapiBin = oldBin
	c := StartCluster(t, 3, 230)
	halapiBin = newBin // every restart from here runs the binary under test

	var acked sync.Map
	var nAcked, nTried atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				nd := c.Nodes[(w+i)%len(c.Nodes)]
				if !nd.Up() {
					time.Sleep(pollInterval)
					continue
				}
				ip := fmt.Sprintf("10.%d.%d.%d", 100+w, i/250, i%250+1)
				nTried.Add(1)
				if _, err := nd.CLI("decisions", "add", "--ip", ip, "--duration", "4h", "--reason", "upgrade"); err == nil {
					acked.Store(ip, true)
					nAcked.Add(1)
				}
			}
		}(w)
	}

	for _, nd := range c.Nodes {
		nd.Stop()
		nd.Restart()
		c.WaitStable(clusterFormTimeout, c.Nodes...)
	}
	close(stop)
	wg.Wait()
	if nAcked.Load() == 0 {
		t.Fatalf("no write acknowledged during the upgrade (%d tried)", nTried.Load())
	}
	c.WaitCaughtUp(c.Nodes...)
	for _, nd := range c.Nodes {
		out := nd.MustCLI("decisions", "list", "-o", "json")
		var missing []string
		acked.Range(func(k, _ any) bool {
			if !strings.Contains(out, `"`+k.(string)+`"`) {
				missing = append(missing, k.(string))
			}
			return true
		})
		if len(missing) > 0 {
			t.Fatalf("node %s lost %d of %d acknowledged writes after the upgrade: %v", nd.ID, len(missing), nAcked.Load(), missing)
		}
	}
	t.Logf("upgrade %s -> current under writes: %d of %d writes acknowledged, all on every node", upgradeBaseline, nAcked.Load(), nTried.Load())
}
