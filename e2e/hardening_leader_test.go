package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	// followerDownFor is how long the follower stays down: long enough
	// for raft's per-follower retry backoff to reach seconds (the scenario).
	followerDownFor = 12 * time.Second
	// restartServeBudget bounds the time from the restarted follower's
	// /health to a fresh bouncer answer and a fresh machine login.
	restartServeBudget = 2 * time.Second
	// restartHealthBudget bounds launch -> /health of the restarted
	// follower (it waits for the cluster's JWT key from the leader; before
	// the raft dial retry this took ~9 s).
	restartHealthBudget = 3 * time.Second
)

// restartProbe is one request against the restarted node; ok reports it
// saw the data written while the node was down.
func restartProbe(ctx context.Context, req *http.Request) (bool, string) {
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// A follower SIGKILLed and kept down 12 s serves the data written meanwhile
// (bouncer key, decision, machine) within 2 s of its /health after restart:
// the leader reaches it again at once (raft dial retries a refused
// connection instead of backing off).
func TestFollowerRestartServesFast(t *testing.T) {
	c := StartCluster(t, 3, 226)
	leader := c.Leader(c.Node(1))
	var f *ClusterNode
	for _, nd := range c.Nodes {
		if nd != leader {
			f = nd
			break
		}
	}
	f.Kill()
	killedAt := time.Now()

	const key, machine, pw, ip = "fresh-bouncer-key-0123456789abcdef", "fresh-machine", "fresh-password-0123456789", "198.51.100.77"
	leader.MustCLI("bouncers", "add", "fresh-bouncer", "--key", key)
	leader.MustCLI("machines", "add", machine, "--password", pw)
	leader.MustCLI("decisions", "add", "--ip", ip, "--duration", "1h", "--reason", "restart test")

	time.Sleep(time.Until(killedAt.Add(followerDownFor))) // the scenario: down 12 s
	launched := time.Now()
	f.Launch()
	f.waitHealthy()
	f.setUp(true)
	healthy := time.Now()

	ctx, cancel := context.WithTimeout(context.Background(), restartServeBudget+3*time.Second)
	defer cancel()
	var bouncerAt, loginAt time.Time
	var lastB, lastL string
	for (bouncerAt.IsZero() || loginAt.IsZero()) && ctx.Err() == nil {
		if bouncerAt.IsZero() {
			req, _ := http.NewRequest(http.MethodGet, f.URL+"v1/decisions?ip="+ip, nil)
			req.Header.Set("X-Api-Key", key)
			var ok bool
			if ok, lastB = restartProbe(ctx, req); ok && strings.Contains(lastB, ip) {
				bouncerAt = time.Now()
			}
		}
		if loginAt.IsZero() {
			body, _ := json.Marshal(map[string]any{"machine_id": machine, "password": pw, "scenarios": []string{}})
			req, _ := http.NewRequest(http.MethodPost, f.URL+"v1/watchers/login", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", watcherUA)
			var ok bool
			if ok, lastL = restartProbe(ctx, req); ok && strings.Contains(lastL, "token") {
				loginAt = time.Now()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
	if bouncerAt.IsZero() || loginAt.IsZero() {
		t.Fatalf("restarted follower did not serve fresh data: bouncer %q, login %q", lastB, lastL)
	}
	bd, ld := bouncerAt.Sub(healthy), loginAt.Sub(healthy)
	t.Logf("restarted follower %s: /health %v after launch; fresh bouncer answer %v and machine login %v after /health",
		f.ID, healthy.Sub(launched).Round(time.Millisecond), bd.Round(time.Millisecond), ld.Round(time.Millisecond))
	if hd := healthy.Sub(launched); hd > restartHealthBudget {
		t.Fatalf("restarted follower healthy %v after launch, want < %v", hd, restartHealthBudget)
	}
	if bd > restartServeBudget || ld > restartServeBudget {
		t.Fatalf("fresh data served %v (bouncer) / %v (login) after /health, want < %v", bd, ld, restartServeBudget)
	}
}
