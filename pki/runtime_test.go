package pki

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
