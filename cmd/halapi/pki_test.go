package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/internal/testutil"
)

type secureNode struct {
	id, dir, api, cluster, gossip string
	cmd                           *exec.Cmd
	cmdStdin                      io.Reader
}

func (n *secureNode) start(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"serve", "--node-id", n.id, "--data-dir", n.dir, "--listen", n.api,
		"--cluster-listen", n.cluster, "--gossip-listen", n.gossip}, extra...)
	n.cmd = exec.Command(binPath, args...)
	logf, _ := os.OpenFile(filepath.Join(n.dir+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.Stdin = n.cmdStdin
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n.cmd.ProcessState == nil {
			_ = n.cmd.Process.Kill()
			_, _ = n.cmd.Process.Wait()
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("%s log:\n%s", n.id, b)
		}
	})
}

func newSecureNode(t *testing.T, id string) *secureNode {
	base := t.TempDir()
	return &secureNode{id: id, dir: filepath.Join(base, id), api: freeAddr(t), cluster: freeAddr(t), gossip: freeAddr(t)}
}

// httpsClient trusts the cluster CA and presents an optional client cert.
func httpsClient(t *testing.T, caFile, certFile, keyFile string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("CA %s: %v", caFile, err)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

func waitHTTPS(t *testing.T, c *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, what, cond)
}

func status(c *http.Client, url string) int {
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A secure cluster: the first node founds it (HTTPS API with a node
// certificate from the built-in CA, mTLS between nodes, encrypted gossip),
// others join with one-time tokens; client certificates issued by the CA
// authenticate bouncers on every node, and a revocation is enforced by
// every node.
func TestSecureClusterJoinTokensAndCertAuth(t *testing.T) {
	n1, n2 := newSecureNode(t, "n1"), newSecureNode(t, "n2")
	n1.start(t)
	caFile := filepath.Join(n1.dir, "pki", "ca.crt")
	waitFor(t, "n1 CA on disk", func() bool { _, err := os.Stat(caFile); return err == nil })
	anon := httpsClient(t, caFile, "", "")
	waitHTTPS(t, anon, "https://"+n1.api+"/health")

	tok := strings.TrimSpace(mustRun(t, "cluster", "token", "--data-dir", n1.dir))
	// a wrong token is refused: the node does not start
	if out, errs, err := run(t, "serve", "--node-id", "bad", "--data-dir", t.TempDir(), "--listen", freeAddr(t),
		"--cluster-listen", freeAddr(t), "--gossip-listen", freeAddr(t), "--join", n1.gossip,
		"--join-token", tok[:len(tok)-4]+"AAAA", "--join-api", n1.api); err == nil || !strings.Contains(errs, "join") {
		t.Fatalf("bad token accepted: %v %s %s", err, out, errs)
	}
	n2.start(t, "--join", n1.gossip, "--join-token", tok, "--join-api", n1.api)
	waitHTTPS(t, anon, "https://"+n2.api+"/health")
	waitFor(t, "n2 to be a voter", func() bool {
		return strings.Count(mustRun(t, "cluster", "status", "--data-dir", n1.dir, "-o", "json"), `"role": "follower"`) == 1
	})
	// the token was used once: a second node cannot reuse it
	if _, errs, err := run(t, "serve", "--node-id", "n3", "--data-dir", t.TempDir(), "--listen", freeAddr(t),
		"--cluster-listen", freeAddr(t), "--gossip-listen", freeAddr(t), "--join", n1.gossip,
		"--join-token", tok, "--join-api", n2.api); err == nil || !strings.Contains(errs, "join") {
		t.Fatalf("token reused: %v %s", err, errs)
	}

	out := t.TempDir()
	mustRun(t, "cert", "issue", "bouncer", "fw1", "--out", out, "--data-dir", n2.dir)
	mustRun(t, "cert", "issue", "agent", "ag1", "--out", out, "--data-dir", n2.dir)
	bouncer := httpsClient(t, filepath.Join(out, "ca.crt"), filepath.Join(out, "fw1.crt"), filepath.Join(out, "fw1.key"))
	agentAsBouncer := httpsClient(t, filepath.Join(out, "ca.crt"), filepath.Join(out, "ag1.crt"), filepath.Join(out, "ag1.key"))
	for _, n := range []*secureNode{n1, n2} {
		if c := status(bouncer, "https://"+n.api+"/v1/decisions/stream?startup=true"); c != 200 {
			t.Fatalf("bouncer cert on %s: %d", n.id, c)
		}
		if c := status(agentAsBouncer, "https://"+n.api+"/v1/decisions"); c != 403 {
			t.Fatalf("agent cert used as bouncer on %s: %d, want 403", n.id, c)
		}
	}
	if b := mustRun(t, "bouncers", "list", "--data-dir", n1.dir); !strings.Contains(b, "fw1@127.0.0.1") || !strings.Contains(b, "tls") {
		t.Fatalf("bouncer row for the cert: %s", b)
	}
	mustRun(t, "cert", "revoke", "--name", "fw1", "--data-dir", n1.dir)
	for _, n := range []*secureNode{n1, n2} {
		if c := status(bouncer, "https://"+n.api+"/v1/decisions"); c != 403 {
			t.Fatalf("revoked cert on %s: %d, want 403", n.id, c)
		}
	}
	// plain HTTP on a public address is refused
	if _, errs, err := run(t, "serve", "--listen", "0.0.0.0:0", "--plain-http", "--data-dir", t.TempDir()); err == nil || !strings.Contains(errs, "loopback") {
		t.Fatalf("plain http: %v %s", err, errs)
	}
}
