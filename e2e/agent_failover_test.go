package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
	"github.com/go-openapi/strfmt"

	"github.com/halapi/halapi/internal/testharness"
)

// agentProc is one `halapi agent run` process on loopback.
type agentProc struct {
	t           testing.TB
	URL         string // http://127.0.0.1:port/
	MetricsAddr string
	logPath     string
	proc        *testharness.Process
}

// startAgent runs `halapi agent run` with the given extra flags and waits
// until it prefers a node.
func startAgent(t testing.TB, args ...string) *agentProc {
	t.Helper()

	a := &agentProc{t: t, MetricsAddr: freeLoopbackAddr(t), logPath: filepath.Join(t.TempDir(), "agent.log")}
	listen := freeLoopbackAddr(t)
	a.URL = "http://" + listen + "/"
	a.proc = &testharness.Process{Bin: halapiBin, LogPath: a.logPath}
	if err := a.proc.Start(append([]string{"agent", "run", "--listen", listen, "--metrics-listen", a.MetricsAddr, "--log-level", "debug"}, args...)...); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(func() {
		if err := a.proc.Stop(stopTimeout); err != nil {
			t.Errorf("agent: %v", err)
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", a.proc.LogTail(64<<10))
		}
	})
	waitFor(t, 15*time.Second, "the agent to prefer a node", func() (bool, string) {
		st, err := a.status()
		if err != nil {
			return false, err.Error()
		}
		return st.Preferred != "", fmt.Sprintf("%+v", st)
	})

	return a
}

type agentNodeStatus struct {
	URL       string `json:"url"`
	ID        string `json:"id"`
	Healthy   bool   `json:"healthy"`
	Requests  int64  `json:"requests"`
	Retries   int64  `json:"retries"`
	Preferred bool   `json:"preferred"`
}

type agentStatus struct {
	Identity *struct {
		Serial   string `json:"serial"`
		Renewals int64  `json:"renewals"`
	} `json:"identity"`
	Preferred string            `json:"preferred"`
	Failovers int64             `json:"failovers"`
	Retries   int64             `json:"retries"`
	Nodes     []agentNodeStatus `json:"nodes"`
}

// waitHealthyNodes waits until the agent knows n healthy nodes (learned
// from the member list).
func (a *agentProc) waitHealthyNodes(t testing.TB, n int) {
	t.Helper()

	waitFor(t, 20*time.Second, "the agent to learn and check every node", func() (bool, string) {
		st, err := a.status()
		healthy := 0
		for _, nd := range st.Nodes {
			if nd.Healthy {
				healthy++
			}
		}
		return err == nil && healthy == n, fmt.Sprintf("%+v %v", st, err)
	})
}

func (a *agentProc) status() (agentStatus, error) {
	var st agentStatus
	client := &http.Client{Timeout: 2 * time.Second}
	code, body, err := httpGet(client, "http://"+a.MetricsAddr+"/status")
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("status %d", code)
	}
	return st, json.Unmarshal(body, &st)
}

// nodeURLKey is how the agent names a node: scheme://host:port.
func nodeURLKey(u string) string { return strings.TrimSuffix(u, "/") }

// preferredNode is the node of nodes whose URL is the agent's preferred
// one (its status's preferred field).
func preferredNode(t testing.TB, nodes []*ClusterNode, preferred string) *ClusterNode {
	t.Helper()
	for _, nd := range nodes {
		if nodeURLKey(nd.URL) == preferred {
			return nd
		}
	}
	t.Fatalf("the agent prefers %q, which is no node of the cluster", preferred)
	return nil
}

// TestAgentFailoverKeepsAlertsAndBans drives the real crowdsec apiclient
// (alerts) and go-cs-bouncer (1 s stream poll) through `halapi agent`,
// bootstrapped with the leader's URL, and SIGKILLs the node the agent uses
// (the leader) in the middle of a stream of alerts: every alert is stored exactly once,
// the bouncer sees every ban, and alert-to-bouncer latency stays under
// 3 s at p99.
func TestAgentFailoverKeepsAlertsAndBans(t *testing.T) {
	agentFaultRun(t, 215, "SIGKILL", func(victim *ClusterNode) {
		victim.Kill()
		victim.setUp(false)
	}, nil, agentVia{})
}

// TestAgentHungNodeKeepsAlertsAndBans is the same with the agent's node
// (the leader) SIGSTOPped instead: its kernel still accepts connections
// and requests, nothing answers. The agent's health check moves the
// requests in flight; a DNS name with every node's address would leave
// crowdsec's clients waiting (they set no timeout). The node is resumed
// (SIGCONT) after the stream: requests it had read while stopped may then
// reach raft, and the idempotency keys keep them from being stored twice.
func TestAgentHungNodeKeepsAlertsAndBans(t *testing.T) {
	agentFaultRun(t, 220, "SIGSTOP", func(victim *ClusterNode) {
		if err := victim.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP: %v", err)
		}
		t.Cleanup(func() { _ = victim.Signal(syscall.SIGCONT) })
	}, func(c *Cluster, victim *ClusterNode) {
		if err := victim.Signal(syscall.SIGCONT); err != nil {
			t.Fatalf("SIGCONT: %v", err)
		}
		c.WaitCaughtUp(c.Nodes...)
	}, agentVia{})
}

// agentFaultRun streams alerts and a bouncer through the agent, applies
// fault to the agent's node after beforeKill alerts, runs afterKill more,
// calls after (may be nil), and checks: no push failed, every alert stored
// once, every ban seen, alert-to-bouncer p99 < 3 s. via says how the
// clients reach the agent (agentsock_failover_test.go: the socket).
func agentFaultRun(t *testing.T, base int, what string, fault func(*ClusterNode), after func(*Cluster, *ClusterNode), via agentVia) {
	const (
		password   = "e2e-agent-failover-password-0123456789"
		bouncerKey = "e2e-agent-failover-bouncer-key-012345678"
		every      = 100 * time.Millisecond
		beforeKill = 30 // alerts pushed before the kill
		afterKill  = 60 // and after it
	)
	c := StartCluster(t, 3, base)
	n1 := c.Node(1)
	addBouncer(t, n1.Server, "fw", bouncerKey)
	n1.MustCLI("machines", "add", "agent-host", "--password", password)
	keyFile := filepath.Join(t.TempDir(), "members.key")
	if err := os.WriteFile(keyFile, []byte(bouncerKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Bootstrapped with the leader's URL only: the agent prefers it (it is
	// the first healthy node it knows and the preference is sticky), so
	// the kill below is the worst case, the leader, and the other nodes
	// come from the member list.
	leader := c.Leader(n1)
	args := []string{"--server", leader.URL, "--api-key-file", keyFile}
	if via.socket {
		args = append(args, "--socket", agentSocketPath(t))
	}
	ag := startAgent(t, args...)
	ag.waitHealthyNodes(t, 3)
	watcherURL := ag.URL
	if via.socket {
		watcherURL = args[len(args)-1] // a path: crowdsec's apiclient dials the socket
	}

	w := apiclient.NewClient(&apiclient.Config{
		MachineID: "agent-host", Password: strfmt.Password(password), URL: mustURL(t, watcherURL),
		VersionPrefix: "v1", UserAgent: watcherUA,
		UpdateScenario: func(context.Context) ([]string, error) { return testScenarios, nil },
	})
	b := &csbouncer.StreamBouncer{APIKey: bouncerKey, APIUrl: ag.URL, TickerInterval: "1s", UserAgent: "e2e-agent-bouncer/v0.0.21"}
	if err := b.Init(); err != nil {
		t.Fatalf("StreamBouncer.Init: %v", err)
	}
	bctx, bcancel := context.WithCancel(context.Background())
	var (
		mu      sync.Mutex
		seen    = map[string]time.Time{}
		pushed  = map[string]time.Time{}
		pushErr []string
	)
	var bwg sync.WaitGroup
	bwg.Add(2)
	go func() {
		defer bwg.Done()
		_ = b.Run(bctx)
	}()
	go func() {
		defer bwg.Done()
		for {
			select {
			case <-bctx.Done():
				return
			case resp := <-b.Stream:
				if resp == nil {
					continue
				}
				now := time.Now()
				mu.Lock()
				for _, d := range resp.New {
					if d != nil && d.Value != nil {
						if _, ok := seen[*d.Value]; !ok {
							seen[*d.Value] = now
						}
					}
				}
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { bcancel(); bwg.Wait() })

	// One alert (one new IP) every 100 ms; the default profile bans it.
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ip := fmt.Sprintf("198.51.%d.%d", 100+i/250, 1+i%250)
			start := time.Now()
			mu.Lock()
			pushed[ip] = start
			mu.Unlock()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			r, _, err := w.Alerts.Add(ctx, models.AddAlertsRequest{agentAlert(ip, "crowdsecurity/ssh-bf", 6)})
			cancel()
			if err == nil && (r == nil || len(*r) != 1) {
				err = fmt.Errorf("answer %v", r)
			}
			if err != nil {
				mu.Lock()
				pushErr = append(pushErr, fmt.Sprintf("%s after %v: %v", ip, time.Since(start).Round(time.Millisecond), err))
				mu.Unlock()
			}
		}
	}()

	counts := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(pushed), len(seen)
	}
	// Let the stream run, then kill the node in use.
	waitFor(t, 20*time.Second, "alerts flowing to the bouncer", func() (bool, string) {
		p, s := counts()
		return p >= beforeKill && s >= beforeKill/2, fmt.Sprintf("%d pushed, %d seen", p, s)
	})
	st, err := ag.status()
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	victim := preferredNode(t, c.Nodes, st.Preferred)
	t.Logf("%s of %s (the agent's node; leader %s)", what, victim.ID, c.Leader(victim).ID)
	fault(victim)
	killedAt, _ := counts()
	waitFor(t, 30*time.Second, "the alert stream to run on through the failover", func() (bool, string) {
		p, _ := counts()
		return p >= killedAt+afterKill, fmt.Sprintf("%d pushed since the kill", p-killedAt)
	})
	close(stop)
	pwg.Wait()
	if after != nil {
		after(c, victim)
	}

	mu.Lock()
	total := len(pushed)
	errs := slices.Clone(pushErr)
	mu.Unlock()
	if len(errs) > 0 {
		t.Errorf("%d of %d pushes failed through the agent:\n%s", len(errs), total, strings.Join(errs, "\n"))
	}
	waitFor(t, 15*time.Second, "the bouncer to see every ban", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for ip := range pushed {
			if _, ok := seen[ip]; !ok {
				missing = append(missing, ip)
			}
		}
		return len(missing) == 0, fmt.Sprintf("%d of %d bans not seen: %v", len(missing), len(pushed), missing)
	})

	// Latency from the start of the push to the bouncer's answer.
	mu.Lock()
	lat := make([]time.Duration, 0, len(pushed))
	for ip, p := range pushed {
		lat = append(lat, seen[ip].Sub(p))
	}
	mu.Unlock()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	t.Logf("%d alerts, alert-to-bouncer latency p50 %v p90 %v p99 %v max %v", len(lat),
		pct(0.5).Round(time.Millisecond), pct(0.9).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	if p99 := pct(0.99); p99 >= 3*time.Second {
		t.Errorf("alert-to-bouncer p99 %v, want < 3s", p99)
	}

	// Every alert stored exactly once (read on a surviving node).
	survivor := c.Others(victim)[0]
	direct := newWatcher(t, survivor.Server, "agent-host", password)
	alerts := listAlerts(t, direct, nil)
	count := map[string]int{}
	for _, a := range alerts {
		if a.Source != nil && a.Source.Value != nil {
			count[*a.Source.Value]++
		}
	}
	mu.Lock()
	for ip := range pushed {
		if count[ip] != 1 {
			t.Errorf("alert for %s stored %d times, want 1", ip, count[ip])
		}
	}
	mu.Unlock()
	if len(alerts) != total {
		t.Errorf("%d alerts stored, %d pushed", len(alerts), total)
	}

	st, _ = ag.status()
	t.Logf("agent after the kill: preferred %s, %d failovers, %d retries", st.Preferred, st.Failovers, st.Retries)
	if st.Preferred == nodeURLKey(victim.URL) || st.Failovers < 1 {
		t.Errorf("agent status after the kill: %+v", st)
	}
	out, err := halapiCmd("agent", "status", "--metrics-listen", ag.MetricsAddr)
	if err != nil || !strings.Contains(out, "Preferred node: "+st.Preferred) || !strings.Contains(out, "/v1/alerts") {
		t.Errorf("halapi agent status: %v\n%s", err, out)
	}
}
