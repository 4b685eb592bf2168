package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The harness itself (internal/testharness under Server and ClusterNode):
// a node crashed, stopped (SIGSTOP) and resumed, and started again with
// the same command line comes back into the cluster; the log of a node
// records each start and the crash; no two servers got the same port.
func TestHarnessShapeClusterRestart(t *testing.T) {
	c := StartCluster(t, 3, 205)

	ports := map[string]string{}
	for _, nd := range c.Nodes {
		for _, a := range []string{nd.Addr, nd.ClusterAddr, nd.GossipAddr, nd.MetricsAddr} {
			_, port, _ := strings.Cut(a, ":")
			if other, dup := ports[port]; dup && other != a {
				// Different loopback addresses may share a port number,
				// but the allocator hands out each port once.
				t.Errorf("port %s given to %s and %s", port, other, a)
			}
			ports[port] = a
		}
	}

	leader := c.WaitStable(clusterFormTimeout, c.Nodes...)
	leader.Kill()
	if leader.running() {
		t.Fatal("killed node still running")
	}
	rest := c.Others(leader)
	c.WaitStable(clusterFormTimeout, rest...)

	leader.Restart()
	c.WaitStable(clusterFormTimeout, c.Nodes...)
	if !c.CheckMembersAlive(gossipSettle, c.Nodes...) {
		t.FailNow()
	}

	log := leader.proc.LogTail(1 << 20)
	for _, want := range []string{"start #1", "start #2", "SIGKILL"} {
		if !strings.Contains(log, want) {
			t.Errorf("log of %s lacks %q", leader.ID, want)
		}
	}

	// A stopped process keeps its port and answers nothing; resumed, it
	// serves again (the stopped state is read from /proc).
	if runtime.GOOS != "linux" {
		return
	}
	victim := c.Others(c.Leader(c.Nodes[0]))[0]
	if err := victim.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = victim.Signal(syscall.SIGCONT) })
	// The signal takes effect asynchronously: wait for the stopped state.
	waitFor(t, 5*time.Second, victim.ID+" stopped", func() (bool, string) {
		st := procState(victim.Pid())
		return st == "T" || st == "t", "state " + st
	})
	if code, _, err := httpGet(&http.Client{Timeout: 300 * time.Millisecond}, victim.URL+"health"); err == nil {
		t.Fatalf("GET /health answered %d by a SIGSTOPped node", code)
	}
	if err := victim.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, victim.ID+" answers again", func() (bool, string) {
		st, err := victim.Status()
		if err != nil {
			return false, err.Error()
		}
		return st.Leader != "", st.String()
	})
}

// procState is the state letter of /proc/<pid>/stat (R, S, T...), "" when
// unreadable.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name (field 2) may hold spaces: the state follows ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return ""
	}
	return string(b[i+2])
}
