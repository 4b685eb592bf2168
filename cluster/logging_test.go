package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// A down peer: raft warns about it twenty times a second for ten minutes;
// the log gets one line per backoff step (1 s doubling to 5 min), each
// with the number of repeats it stands for; another peer is independent;
// after a quiet minute the next failure is logged at once.
func TestRaftLogsThroughSlogOncePerBackoffStep(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	a := newRaftLogger(l).(*hclogAdapter)
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	a.lim.now = clk.now

	for i := 0; i < 20*600; i++ {
		a.Warn("failed to contact", "server-id", "n3", "time", time.Duration(i)*50*time.Millisecond)
		a.Error("failed to heartbeat to", "peer", "127.0.0.3:8300", "backoff time", "10ms", "error", errors.New("connection refused"))
		if i%20 == 0 {
			a.Warn("failed to contact", "server-id", "n2", "time", time.Second)
		}
		clk.t = clk.t.Add(50 * time.Millisecond)
	}
	a.Info("entering follower state") // below the default level
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	count := map[string]int{}
	repeated := 0
	for _, ln := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(ln), &rec); err != nil {
			t.Fatalf("not one JSON record per line (same handler as halapi's): %q", ln)
		}
		if rec["component"] != "raft" {
			t.Fatalf("no component=raft: %v", rec)
		}
		if rec["msg"] == "failed to heartbeat to" && rec["error"] != "connection refused" {
			t.Fatalf("error attribute: %v", rec)
		}
		key := rec["msg"].(string)
		if id, ok := rec["server-id"].(string); ok {
			key += " " + id
		}
		count[key]++
		if n, ok := rec["repeated"].(float64); ok {
			repeated += int(n)
		}
	}
	// steps at 0, 1, 3, 7, 15, 31, 63, 127, 255, 511 s (the step stops
	// doubling at 5 min): 10 lines for 10 minutes instead of 12,000
	for _, k := range []string{"failed to contact n3", "failed to heartbeat to"} {
		if count[k] < 8 || count[k] > 11 {
			t.Errorf("%q logged %d times in 10 minutes, want one per backoff step (~10): %v", k, count[k], count)
		}
	}
	if count["failed to contact n2"] < 5 || count["failed to contact n2"] > 11 {
		t.Errorf("another peer's warnings: %d", count["failed to contact n2"])
	}
	if repeated == 0 {
		t.Error("no line says how many repeats it stands for")
	}
	if count["entering follower state"] != 0 {
		t.Error("raft info line logged at level info")
	}

	// quiet for more than a minute: logged at once
	clk.t = clk.t.Add(2 * time.Minute)
	buf.Reset()
	a.Warn("failed to contact", "server-id", "n3", "time", time.Second)
	if !strings.Contains(buf.String(), "failed to contact") {
		t.Fatal("a failure after a quiet minute was suppressed")
	}
}

func TestMemberlistLogsThroughSlog(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ml := newMemberlistLogger(l)
	for i := 0; i < 50; i++ {
		ml.Printf("[WARN] memberlist: Was able to connect to n3 over TCP but UDP probes failed, network may be misconfigured (%d)", i)
		ml.Printf("[DEBUG] memberlist: Failed UDP ping: n3 (timeout reached)")
	}
	ml.Printf("[ERR] memberlist: Failed to send gossip to 127.0.0.3:7946: connection refused")
	out := buf.String()
	if got := strings.Count(out, "Was able to connect to n3"); got != 1 {
		t.Fatalf("repeated memberlist warning logged %d times:\n%s", got, out)
	}
	if strings.Contains(out, "Failed UDP ping") || !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "component=memberlist") ||
		strings.Contains(out, "memberlist: Was") {
		t.Fatalf("memberlist lines:\n%s", out)
	}
}
