package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/internal/testharness"
)

// refusedServeTimeout bounds a `serve` that must refuse to start.
const refusedServeTimeout = 30 * time.Second

func loopbackPort(t *testing.T, udp bool) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortOn(t, "127.0.0.1", udp)))
}

// refusedServe runs `halapi serve args...`, expects a non-zero exit (not a
// timeout) whose last stderr line is one "Error: ..." line containing want,
// and returns the whole stderr.
func refusedServe(t *testing.T, want string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), refusedServeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, halapiBin, append([]string{"serve"}, args...)...)
	testharness.SetProcAttr(cmd)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("serve did not exit within %v (want a refusal containing %q); stderr:\n%s", refusedServeTimeout, want, stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("serve: %v, want a non-zero exit; stderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "Error: ") || !strings.Contains(last, want) {
		t.Fatalf("last stderr line %q, want an \"Error: \" line containing %q; stderr:\n%s", last, want, stderr.String())
	}
	return stderr.String()
}

// noState checks that dir holds no raft or PKI state (it may not exist).
func noState(t *testing.T, dir string) {
	t.Helper()
	for _, sub := range []string{"raft", "pki"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err == nil {
			t.Fatalf("refused start left %s in the data dir", sub)
		}
	}
}

// A fresh node in secure mode with --join but no token would found a
// second cluster with its own CA: refused, nothing written.
func TestStartupRefusesJoinWithoutToken(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	refusedServe(t, "--join-token", "--node-id", "n2", "--data-dir", dir, "--listen", freeLoopbackAddr(t),
		"--cluster-listen", loopbackPort(t, false), "--gossip-listen", loopbackPort(t, true),
		"--join", loopbackPort(t, true))
	noState(t, dir)
	if _, err := os.Stat(dir); err == nil {
		t.Fatal("refused start created the data dir")
	}
}

// A port already taken is reported before the data dir is initialised.
func TestStartupRefusesPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	for _, flag := range []string{"--listen", "--cluster-listen"} {
		t.Run(flag, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			args := map[string]string{"--listen": freeLoopbackAddr(t), "--cluster-listen": loopbackPort(t, false)}
			args[flag] = taken
			refusedServe(t, flag+" "+taken, "--data-dir", dir, "--plain-http", "--insecure-cluster",
				"--listen", args["--listen"], "--cluster-listen", args["--cluster-listen"],
				"--gossip-listen", loopbackPort(t, true))
			if _, err := os.Stat(dir); err == nil {
				t.Fatal("refused start created the data dir")
			}
		})
	}
}

// A second serve on a data dir in use exits at once with a clear message
// and leaves the running node alone.
func TestStartupRefusesDataDirInUse(t *testing.T) {
	s := StartServer(t)
	refusedServe(t, "in use", "--data-dir", s.DataDir, "--listen", freeLoopbackAddr(t), "--plain-http")
	if code, _, err := httpGet(http.DefaultClient, s.URL+"health"); err != nil || code != http.StatusOK {
		t.Fatalf("first node after the refused start: /health %d %v", code, err)
	}
	// The admin socket still belongs to the first node.
	s.MustCLI("bouncers", "list")
}

// A join token redeemed for the id of a live member is refused without
// being spent: the same token then admits a node with a new id.
func TestStartupRefusesDuplicateNodeID(t *testing.T) {
	sc := newSecureCluster(t)
	n1 := sc.Found()
	tok := sc.JoinToken(n1)
	dir := filepath.Join(t.TempDir(), "data")
	refusedServe(t, "already a live member", "--node-id", n1.ID, "--data-dir", dir, "--listen", freeLoopbackAddr(t),
		"--cluster-listen", loopbackPort(t, false), "--gossip-listen", loopbackPort(t, true),
		"--join", n1.GossipAddr, "--join-token", tok, "--join-api", n1.Addr)
	noState(t, filepath.Join(dir))
	n2 := sc.Join(tok, n1)
	if n2.ID == n1.ID {
		t.Fatal("harness gave the joiner a duplicate id")
	}
}
