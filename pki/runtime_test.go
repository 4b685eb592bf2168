package pki

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CheckJoin: only a secure node that would join others with neither a
// token nor a past (certificate or raft state) is refused; FirstNode is
// its other side.
func TestCheckJoinAndFirstNode(t *testing.T) {
	dir := t.TempDir()
	secure := RuntimeConfig{DataDir: dir, ClusterListen: "127.0.0.1:7000"}
	if err := secure.CheckJoin(true); err == nil || !strings.Contains(err.Error(), "needs --join-token") {
		t.Fatalf("fresh secure join: %v", err)
	}
	for name, c := range map[string]RuntimeConfig{
		"founding":     secure,
		"insecure":     {DataDir: dir, ClusterListen: "127.0.0.1:7000", InsecureCluster: true},
		"no cluster":   {DataDir: dir},
		"with a token": {DataDir: dir, ClusterListen: "127.0.0.1:7000", JoinToken: "t"},
	} {
		if err := c.CheckJoin(name != "founding"); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "raft", "raft.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := secure.CheckJoin(true); err != nil {
		t.Fatalf("a restart with raft state: %v", err)
	}
	if rt := (&Runtime{cfg: secure, id: &JoinResult{}}); !rt.FirstNode() {
		t.Fatal("a secure node without certificate or token must found the cluster")
	}
	if rt := (&Runtime{cfg: secure, id: &JoinResult{CertPEM: []byte("x")}}); rt.FirstNode() {
		t.Fatal("a node with a certificate does not found a cluster")
	}
}

// WaitCertificate: at once with a certificate, when Start makes this node
// ready, an error naming the wait after max, ctx's error when stopped.
func TestWaitCertificate(t *testing.T) {
	rt := &Runtime{ready: make(chan struct{})}
	if err := rt.WaitCertificate(t.Context(), 10*time.Millisecond); err == nil || err.Error() != "no node certificate after 0.01 s: the cluster CA is not reachable (is there a leader?)" {
		t.Fatalf("timeout: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := rt.WaitCertificate(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped: %v", err)
	}
	go close(rt.ready)
	if err := rt.WaitCertificate(t.Context(), time.Minute); err != nil {
		t.Fatalf("ready: %v", err)
	}
}

// JoinPlan: a founding node drops --join and --bootstrap-expect, a
// joiner or a restart keeps them.
func TestJoinPlan(t *testing.T) {
	secure := RuntimeConfig{DataDir: t.TempDir(), ClusterListen: "127.0.0.1:7000"}
	found := &Runtime{cfg: secure, id: &JoinResult{}, log: quietLogger()}
	if j, e := found.JoinPlan([]string{"a:1"}, 3); j != nil || e != 0 {
		t.Fatalf("founding node: %v %d", j, e)
	}
	secure.JoinToken = "tok"
	joiner := &Runtime{cfg: secure, id: &JoinResult{}, log: quietLogger()}
	if j, e := joiner.JoinPlan([]string{"a:1"}, 3); len(j) != 1 || e != 3 {
		t.Fatalf("joiner: %v %d", j, e)
	}
}
