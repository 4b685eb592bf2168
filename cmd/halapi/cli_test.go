package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/internal/testharness"
	"github.com/halapi/halapi/internal/testutil"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "halapi-cli")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "halapi")
	if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freeAddr(t *testing.T) string { return testutil.FreeAddr(t) }

// startNode runs `halapi serve` and waits for /health (the admin socket
// is created before the API listener).
func startNode(t *testing.T, extra ...string) (dataDir, addr string) {
	t.Helper()
	dataDir, addr = t.TempDir(), freeAddr(t)
	p := &testharness.Process{Bin: binPath, LogPath: filepath.Join(dataDir, "node.log")}
	if err := p.Start(append([]string{"serve", "--data-dir", dataDir, "--listen", addr, "--plain-http"}, extra...)...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Kill(10 * time.Second)
		if t.Failed() {
			t.Logf("node log:\n%s", p.LogTail(64<<10))
		}
	})
	if err := testharness.WaitHealthy(context.Background(), p, "http://"+addr+"/health", nil, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	return dataDir, addr
}

func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, err := run(t, args...)
	if err != nil {
		t.Fatalf("halapi %v: %v\n%s%s", args, err, out, errs)
	}
	return out
}

func TestAdminCommands(t *testing.T) {
	dir, addr := startNode(t)
	creds := filepath.Join(t.TempDir(), "creds.yaml")
	mustRun(t, "machines", "add", "agent1", "--password", "pw1", "--data-dir", dir, "-f", creds, "-u", "http://"+addr)
	b, err := os.ReadFile(creds)
	if err != nil || !strings.Contains(string(b), "login: agent1") || !strings.Contains(string(b), "password: pw1") {
		t.Fatalf("credentials file: %q %v", b, err)
	}
	if st, _ := os.Stat(creds); st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials mode %v", st.Mode())
	}
	var ms []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "machines", "list", "--data-dir", dir, "-o", "json")), &ms); err != nil || len(ms) != 1 || ms[0]["machine_id"] != "agent1" || ms[0]["is_validated"] != true {
		t.Fatalf("machines list: %v %v", ms, err)
	}
	// duplicate: one-line error, non-zero exit
	_, errs, err := run(t, "machines", "add", "agent1", "--password", "x", "--data-dir", dir)
	if err == nil || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "already exist") {
		t.Fatalf("duplicate machine: err=%v stderr=%q", err, errs)
	}
	key := strings.TrimSpace(mustRun(t, "bouncers", "add", "fw", "--key", "k-123", "--data-dir", dir, "-o", "raw"))
	if key != "k-123" {
		t.Fatalf("key %q", key)
	}
	gen := strings.TrimSpace(mustRun(t, "bouncers", "add", "fw2", "--data-dir", dir, "-o", "raw"))
	if len(gen) != 43 {
		t.Fatalf("generated key %q: want 43 chars like cscli", gen)
	}
	req, _ := http.NewRequest("GET", "http://"+addr+"/v1/decisions", nil)
	req.Header.Set("X-Api-Key", gen)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("generated key refused: %v %v", resp, err)
	}
	resp.Body.Close()
	mustRun(t, "decisions", "add", "-i", "1.2.3.4", "-d", "1h", "--data-dir", dir)
	if out := mustRun(t, "decisions", "list", "--data-dir", dir); !strings.Contains(out, "Ip:1.2.3.4") {
		t.Fatalf("decisions list: %q", out)
	}
	if out := mustRun(t, "decisions", "delete", "-i", "1.2.3.4", "--data-dir", dir); !strings.Contains(out, "1 decision(s) deleted") {
		t.Fatalf("decisions delete: %q", out)
	}
	if _, errs, err := run(t, "decisions", "add", "-i", "not-an-ip", "--data-dir", dir); err == nil || !strings.Contains(errs, "invalid ip address") {
		t.Fatalf("bad ip: %v %q", err, errs)
	}
	if _, errs, err := run(t, "decisions", "delete", "--data-dir", dir); err == nil || !strings.Contains(errs, "--all") {
		t.Fatalf("delete without filter: %v %q", err, errs)
	}
	mustRun(t, "bouncers", "delete", "fw", "--data-dir", dir)
	if _, errs, err := run(t, "bouncers", "delete", "fw", "--data-dir", dir); err == nil || !strings.Contains(errs, "not found") {
		t.Fatalf("delete missing bouncer: %v %q", err, errs)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "cluster", "status", "--data-dir", dir, "-o", "json")), &st); err != nil || st["state"] != "Leader" {
		t.Fatalf("status %v %v", st, err)
	}
}

func TestCommandErrors(t *testing.T) {
	_, errs, err := run(t, "machines", "list", "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(errs, "no running halapi node") {
		t.Fatalf("no node: %v %q", err, errs)
	}
	if _, errs, err := run(t, "serve", "--listen", "0.0.0.0:0", "--plain-http", "--data-dir", t.TempDir()); err == nil || !strings.Contains(errs, "only allowed on a loopback") {
		t.Fatalf("plain http on all interfaces: %v %q", err, errs)
	}
	bad := filepath.Join(t.TempDir(), "p.yaml")
	_ = os.WriteFile(bad, []byte("name: x\nfilters: ['Alert.GetScope() ==']\n"), 0o600)
	if _, errs, err := run(t, "serve", "--listen", "127.0.0.1:0", "--profiles", bad, "--data-dir", t.TempDir()); err == nil || !strings.Contains(errs, "profiles") {
		t.Fatalf("bad profiles: %v %q", err, errs)
	}
}
