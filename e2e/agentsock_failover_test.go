package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
	"github.com/go-openapi/strfmt"
)

// agentVia says how agentFaultRun's clients reach the agent.
type agentVia struct {
	// socket: the crowdsec apiclient uses the agent's unix socket (its
	// URL is the socket's path); the bouncer keeps the TCP listener, since
	// go-cs-bouncer v0.0.21 cannot dial a socket
	// (TestAgentSocketClients shows it).
	socket bool
}

// agentSocketPath is a fresh socket path short enough for a unix socket
// address (t.TempDir() paths can be longer than its 107 bytes).
func agentSocketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hagent")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

// TestAgentSocketFailoverKeepsAlertsAndBans is
// TestAgentFailoverKeepsAlertsAndBans with the crowdsec agent (the real
// apiclient: login, alert pushes) on the agent's unix socket: SIGKILL of
// the agent's node (the leader) in the middle of the alert stream, every
// alert stored once, every ban seen by the bouncer, p99 < 3 s.
func TestAgentSocketFailoverKeepsAlertsAndBans(t *testing.T) {
	agentFaultRun(t, 85, "SIGKILL", func(victim *ClusterNode) {
		victim.Kill()
		victim.setUp(false)
	}, nil, agentVia{socket: true})
}

// TestAgentSocketHungNodeKeepsAlertsAndBans is
// TestAgentHungNodeKeepsAlertsAndBans (the agent's node SIGSTOPped, then
// resumed) with the crowdsec agent on the agent's unix socket.
func TestAgentSocketHungNodeKeepsAlertsAndBans(t *testing.T) {
	agentFaultRun(t, 87, "SIGSTOP", func(victim *ClusterNode) {
		if err := victim.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP: %v", err)
		}
		t.Cleanup(func() { _ = victim.Signal(syscall.SIGCONT) })
	}, func(c *Cluster, victim *ClusterNode) {
		if err := victim.Signal(syscall.SIGCONT); err != nil {
			t.Fatalf("SIGCONT: %v", err)
		}
		c.WaitCaughtUp(c.Nodes...)
	}, agentVia{socket: true})
}

// TestAgentSocketClients: the real clients on `halapi agent run --socket`:
//   - the socket is 0660 with the asked group;
//   - crowdsec's apiclient (the crowdsec agent: login, alert push, list;
//     cscli's `lapi status`: NewDefaultClient and a login) works with the
//     socket's path as its URL;
//   - go-cs-bouncer v0.0.21 cannot use a socket (it hands its own HTTP
//     client to the apiclient, which then drops the socket dialer and
//     resolves the host "unix"): its bouncers keep the TCP listener;
//   - after a SIGKILL the agent leaves its socket file behind and a
//     restart replaces it; a second agent on a live socket exits with
//     one line and the first keeps serving.
func TestAgentSocketClients(t *testing.T) {
	const (
		password   = "e2e-agentsock-password-0123456789abcd"
		bouncerKey = "e2e-agentsock-bouncer-key-0123456789abc"
	)
	s := StartServer(t)
	addBouncer(t, s, "fw", bouncerKey)
	s.MustCLI("machines", "add", "sock-host", "--password", password)
	sock := agentSocketPath(t)
	gid := strconv.Itoa(os.Getgid())
	ag := startAgent(t, "--server", s.URL, "--socket", sock, "--socket-group", gid)

	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != 0o660 || strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)) != gid {
		t.Fatalf("socket %v gid %d, want a 0660 socket of group %s", fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, gid)
	}

	// crowdsec agent: login + push + list, over the socket
	w := apiclient.NewClient(&apiclient.Config{
		MachineID: "sock-host", Password: strfmt.Password(password), URL: mustURL(t, sock),
		VersionPrefix: "v1", UserAgent: watcherUA,
		UpdateScenario: func(context.Context) ([]string, error) { return testScenarios, nil },
	})
	push := func(ip string) {
		t.Helper()
		r := mustCall(t, "push over the socket", func(ctx context.Context) (*models.AddAlertsResponse, error) {
			r, _, err := w.Alerts.Add(ctx, models.AddAlertsRequest{agentAlert(ip, "crowdsecurity/ssh-bf", 6)})
			return r, err
		})
		if r == nil || len(*r) != 1 {
			t.Fatalf("push of %s answered %v", ip, r)
		}
	}
	push("198.51.100.7")
	got := mustCall(t, "alerts list over the socket", func(ctx context.Context) (*models.GetAlertsResponse, error) {
		a, _, err := w.Alerts.List(ctx, apiclient.AlertsListOpts{})
		return a, err
	})
	if got == nil || len(*got) != 1 || *(*got)[0].Source.Value != "198.51.100.7" {
		t.Fatalf("alerts over the socket: %+v", got)
	}

	// cscli lapi status: NewDefaultClient(url, ..., nil) and a login
	cs, err := apiclient.NewDefaultClient(mustURL(t, sock), "v1", "cscli/v1.7.6", nil)
	if err != nil {
		t.Fatal(err)
	}
	mid, pw := "sock-host", strfmt.Password(password)
	mustCall(t, "cscli login over the socket", func(ctx context.Context) (*apiclient.Response, error) {
		_, resp, err := cs.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{MachineID: &mid, Password: &pw})
		return resp, err
	})

	// go-cs-bouncer v0.0.21: not over a socket; over the TCP listener, yes.
	// Its API-key client falls back on http.DefaultTransport: swapped for
	// one that records where it would dial and dials nothing (the host
	// "unix" would otherwise be looked up in the DNS).
	var dialed []string
	saved := http.DefaultTransport
	tr := saved.(*http.Transport).Clone()
	tr.DialContext = func(_ context.Context, network, addr string) (net.Conn, error) {
		dialed = append(dialed, network+" "+addr)
		return nil, errors.New("e2e: no dial")
	}
	http.DefaultTransport = tr
	sb := &csbouncer.StreamBouncer{APIKey: bouncerKey, APIUrl: sock, TickerInterval: "1s", UserAgent: "e2e-sock-bouncer/v0.0.21"}
	err = sb.Init()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err = sb.APIClient.Decisions.GetStream(ctx, apiclient.DecisionsStreamOpts{Startup: true})
		cancel()
	}
	http.DefaultTransport = saved
	if err == nil || len(dialed) == 0 || dialed[0] != "tcp unix:80" {
		t.Fatalf("go-cs-bouncer v0.0.21 over the socket: %v, dialed %q; want a TCP dial of the host \"unix\" "+
			"(if it reached the agent: update agentVia, the docs and this test)", err, dialed)
	}
	t.Logf("go-cs-bouncer v0.0.21 with a socket URL dials %q: %v", dialed, err)
	lb := &csbouncer.LiveBouncer{APIKey: bouncerKey, APIUrl: ag.URL, UserAgent: "e2e-sock-bouncer/v0.0.21"}
	if err := lb.Init(); err != nil {
		t.Fatal(err)
	}
	ds := mustCall(t, "bouncer query over TCP", func(ctx context.Context) (*models.GetDecisionsResponse, error) {
		return lb.Get(ctx, "198.51.100.7")
	})
	if ds == nil || len(*ds) != 1 {
		t.Fatalf("bouncer query through the TCP listener: %+v", ds)
	}

	// SIGKILL: the socket file stays behind; the restart replaces it.
	if err := ag.proc.Kill(stopTimeout); err != nil {
		t.Fatalf("kill agent: %v", err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("after SIGKILL the socket file is gone (%v): the restart below would prove nothing", err)
	}
	if err := ag.proc.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the restarted agent to prefer a node", func() (bool, string) {
		st, err := ag.status()
		return err == nil && st.Preferred != "", fmt.Sprintf("%+v %v", st, err)
	})
	push("198.51.100.8")

	// A second agent on the live socket: one line, exit 1; the first
	// agent keeps its socket.
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, halapiBin, "agent", "run", "--server", s.URL, "--listen", "", "--metrics-listen", "", "--socket", sock)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another process listens") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("second agent on the live socket: %v\n%s", err, out)
	}
	push("198.51.100.9")

	// Stopped cleanly, the agent removes its socket.
	if err := ag.proc.Stop(stopTimeout); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("socket after a clean stop: %v, want removed", err)
	}
}
