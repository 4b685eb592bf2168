package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/agent"
)

// Bad agent command lines are one line and exit 1, before anything listens.
func TestAgentRunRefusals(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(cfg, []byte("listen: 127.0.0.1:0\nservers: [http://127.0.0.1:1/]\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notSocket := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(notSocket, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"agent", "run"}, "at least one --server"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--listen", "0.0.0.0:8081"}, "loopback only"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--metrics-listen", "10.0.0.1:6061"}, "loopback only"},
		{[]string{"agent", "run", "--server", "http://0.0.0.0:8080/"}, "unspecified address"},
		{[]string{"agent", "run", "--server", "ftp://h:1/"}, "scheme"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--cert", "x.crt"}, "--cert and --key"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--tls-listen", "127.0.0.1:0"}, "--tls-listen needs"},
		{[]string{"agent", "run", "--config", cfg}, "bogus"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--procs", "-1"}, "--procs must be 0 or more"},
		{[]string{"agent", "status", "-o", "xml"}, "human or json"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--listen", ""}, "--listen must not be empty (unless --socket"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--socket-group", "0"}, "--socket-group needs --socket"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--listen", "", "--socket", "agent.sock"}, "must be absolute"},
		{[]string{"agent", "run", "--server", "http://127.0.0.1:1/", "--listen", "", "--metrics-listen", "", "--socket", notSocket}, "not a socket"},
		{[]string{"agent", "enroll", "--url", "https://127.0.0.1:1/", "--token", "t", "--out", t.TempDir(), "--lapi-url", "/run/halapi-agent/agent.sock"},
			"a certificate client cannot use a unix socket"},
		{[]string{"agent", "enroll", "--url", "https://127.0.0.1:1/", "--token", "t", "--out", t.TempDir(), "--no-agent", "--agent-socket", "/run/a.sock"},
			"--agent-socket needs the agent"},
	} {
		cmd := exec.Command(binPath, c.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			out := strings.TrimSpace(stderr.String())
			if err == nil || !strings.Contains(out, c.want) || strings.Count(out, "\n") != 0 {
				t.Errorf("%v: exit %v, stderr %q; want one line with %q", c.args, err, out, c.want)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("%v: still running", c.args)
		}
	}
}

func TestAgentStatusPrints(t *testing.T) {
	var b bytes.Buffer
	printAgentStatus(&b, agent.Status{Preferred: "http://127.0.0.1:8080", Failovers: 2, Retries: 3,
		Nodes:  []agent.NodeStatus{{URL: "http://127.0.0.1:8080", ID: "n1", Healthy: true, Preferred: true, Requests: 7}},
		Recent: []agent.RequestRecord{{Method: "GET", Path: "/v1/decisions/stream", Node: "http://127.0.0.1:8080", Status: 200, Attempts: 2}}})
	out := b.String()
	for _, want := range []string{"Preferred node: http://127.0.0.1:8080", "Failovers: 2", "Retries: 3", "http://127.0.0.1:8080 *", "/v1/decisions/stream"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}
