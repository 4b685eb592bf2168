package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/agent/agentbench"
	"github.com/halapi/halapi/internal/testharness"
)

// TestQuickBenchmark builds halapi and runs the whole benchmark (every
// phase, 3-node clusters and the scale phase included) in -quick mode with
// 1 s runs: every metric must come out with a non-zero figure.
func TestQuickBenchmark(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real servers and clusters and loads them for ~50 s")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads memory and CPU figures from /proc")
	}

	root, err := testharness.RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testharness.BuildHalapi(context.Background(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	profDir := filepath.Join(t.TempDir(), "profiles")
	var stdout, stderr bytes.Buffer
	// -quick, made cheaper where a figure does not need the size to come
	// out: no idle pauses (RSS is read right after loading), 20,000
	// decisions for the memory phase, 3 stream fetches, 10 lag writes.
	args := []string{"-bin", bin, "-quick", "-duration", "1s", "-json", jsonPath,
		"-idle", "0", "-settle", "0", "-memory-decisions", "20000", "-stream-runs", "3", "-lag-writes", "10",
		"-profile-dir", profDir}
	code := realMain(args, &stdout, &stderr)
	t.Logf("report:\n%s", stdout.String())
	if code != 0 {
		t.Fatalf("exit status %d\nstderr:\n%s", code, stderr.String())
	}

	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("JSON report: %v\n%s", err, data)
	}
	if len(rep.Errors) > 0 {
		t.Errorf("report errors: %q", rep.Errors)
	}
	checkProfiles(t, profDir)

	want := []string{
		"query_rps", "query_p50_ms", "query_p99_ms",
		"stream_ms", "stream_mb",
		"ingest_alerts_per_s", "ingest_p50_ms",
		"rss_small_mib", "rss_large_mib", "import_decisions_per_s",
		"cluster_failover_s", "cluster_lag_p99_ms", "cluster_lag_p50_ms",
		"cluster_query_rps", "cluster_query_p50_ms", "cluster_ingest_alerts_per_s", "cluster_ingest_p50_ms",
		"tls_query_rps", "tls_query_p50_ms", "tls_handshake_rps", "tls_handshake_p50_ms",
		"capi_pull_s", "capi_query_p99_ms",
		"scale_storm_s", "scale_storm_peak_rss_mib", "scale_idle_rss_mib", "scale_stream_ms", "scale_settled_rss_mib",
		"scale_poll_p99_ms", "scale_touch_entries_per_s", "scale_bouncer_kib",
		"scale_ingest_alerts_per_s", "scale_ingest_p50_ms",
		"scale_capi_pull_s", "scale_capi_query_p99_ms", "scale_catchup_s",
	}
	// Figures that have a bare-handler counterpart.
	withBare := map[string]bool{"query_rps": true, "query_p50_ms": true, "query_p99_ms": true,
		"stream_ms": true, "ingest_alerts_per_s": true, "ingest_p50_ms": true}
	// Figures compared with another halapi setup (leader, plain HTTP...).
	withRef := map[string]bool{"cluster_query_rps": true, "cluster_query_p50_ms": true,
		"cluster_ingest_alerts_per_s": true, "cluster_ingest_p50_ms": true,
		"tls_query_rps": true, "tls_query_p50_ms": true, "tls_handshake_rps": true, "tls_handshake_p50_ms": true,
		"capi_query_p99_ms": true, "scale_ingest_alerts_per_s": true, "scale_ingest_p50_ms": true, "scale_capi_query_p99_ms": true}
	// Figures judged against a target.
	judged := map[string]bool{"query_rps": true, "stream_ms": true, "ingest_alerts_per_s": true, "rss_large_mib": true,
		"cluster_failover_s": true, "cluster_lag_p99_ms": true, "cluster_query_rps": true, "cluster_ingest_alerts_per_s": true,
		"tls_query_rps": true, "scale_storm_s": true, "scale_storm_peak_rss_mib": true, "scale_idle_rss_mib": true, "scale_stream_ms": true,
		"scale_settled_rss_mib": true, "scale_poll_p99_ms": true, "scale_touch_entries_per_s": true, "scale_ingest_alerts_per_s": true,
		"scale_capi_pull_s": true, "scale_capi_query_p99_ms": true, "scale_catchup_s": true}

	if hasConsole(context.Background(), bin) {
		want = append(want, "ui_decisions_page_ms", "ui_decisions_page_max_ms", "ui_decisions_search_ms")
		judged["ui_decisions_page_ms"] = true
	}

	// The agent phase: one pair of figures per layout this machine allows,
	// judged on the last one (the closest to a deployment).
	// Then the last layout again over HTTPS (judged: a bouncer's path);
	// the pinned and netns runs also measure a client on the agent's socket.
	var agentLast string
	agentKeys := func(k string, socket bool) {
		want = append(want, k+"_rps", k+"_p50")
		withRef[k+"_rps"], withRef[k+"_p50"] = true, true
		if socket {
			want = append(want, k+"_sock_rps", k+"_sock_p50")
			withRef[k+"_sock_rps"], withRef[k+"_sock_p50"] = true, true
		}
	}
	for _, l := range []string{agentbench.Loopback, agentbench.Pinned, agentbench.Netns} {
		if agentbench.Available(l) == "" {
			agentKeys("agent_"+l, l != agentbench.Loopback)
			agentLast = l
		}
	}
	agentKeys("agent_"+agentLast+"_tls", agentLast != agentbench.Loopback)
	judged["agent_"+agentLast+"_tls_rps"], judged["agent_"+agentLast+"_tls_p50"] = true, true

	got := map[string]*metric{}
	for _, m := range rep.Metrics {
		got[m.Key] = m
	}
	for _, k := range want {
		m := got[k]
		if m == nil {
			t.Errorf("metric %s missing from the report", k)
			continue
		}
		// RSS growth over a quick run may be nothing or negative (GC).
		if m.Value <= 0 && k != "scale_bouncer_kib" {
			t.Errorf("metric %s (%s): value %v, want > 0", k, m.Name, m.Value)
		}
		if withBare[k] && (m.Bare <= 0 || m.Ratio <= 0) {
			t.Errorf("metric %s (%s): bare %v, ratio %v, want both > 0", k, m.Name, m.Bare, m.Ratio)
		}
		if withRef[k] && (m.Ref <= 0 || m.RefName == "" || m.Ratio <= 0) {
			t.Errorf("metric %s (%s): %s %v, ratio %v, want a named reference and both > 0", k, m.Name, m.RefName, m.Ref, m.Ratio)
		}
		if judged[k] && m.Pass == nil {
			t.Errorf("metric %s (%s): not judged against its target", k, m.Name)
		}
		if m.Errors > 0 {
			t.Errorf("metric %s (%s): %d request errors", k, m.Name, m.Errors)
		}
		if !strings.Contains(stdout.String(), m.Name) {
			t.Errorf("metric %s: %q not in the printed table", k, m.Name)
		}
	}
	if len(rep.Metrics) != len(want) {
		t.Errorf("report has %d metrics, want %d", len(rep.Metrics), len(want))
	}
	for _, s := range []string{"metric", "halapi", "target", "bare handler / ratio", "result"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("table header %q missing", s)
		}
	}
}

func TestPercentile(t *testing.T) {
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(i+1) * time.Millisecond
	}
	if got := percentile(d, 0.5); got != 50*time.Millisecond {
		t.Errorf("p50 = %v, want 50ms", got)
	}
	if got := percentile(d, 0.99); got != 99*time.Millisecond {
		t.Errorf("p99 = %v, want 99ms", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

func TestBenchIPsDistinct(t *testing.T) {
	const n = 200000
	seen := make(map[uint32]bool, n)
	for i := 0; i < n; i++ {
		ip := benchIP(importNet, i)
		if ip>>24 != importNet {
			t.Fatalf("index %d: %s outside %d.0.0.0/8", i, ipString(ip), importNet)
		}
		if seen[ip] {
			t.Fatalf("index %d: %s repeated", i, ipString(ip))
		}
		seen[ip] = true
	}
	if s := ipString(benchIP(ingestNet, 1)); !strings.HasPrefix(s, "12.") {
		t.Errorf("ingest address %s not in 12.0.0.0/8", s)
	}
}

func TestBodiesAreValidJSON(t *testing.T) {
	now := time.Now().UTC().Format(time.RFC3339)
	imp := appendImportAlert([]byte{'['}, 0, 3, now)
	imp = append(imp, ']')
	var alerts []map[string]any
	if err := json.Unmarshal(imp, &alerts); err != nil {
		t.Fatalf("import body: %v\n%s", err, imp)
	}
	if len(alerts) != 1 || len(alerts[0]["decisions"].([]any)) != 3 {
		t.Fatalf("import body: %s", imp)
	}
	batch := agentBatch(0, alertsPerBatch, now)
	alerts = nil
	if err := json.Unmarshal(batch, &alerts); err != nil {
		t.Fatalf("agent batch: %v\n%s", err, batch)
	}
	if len(alerts) != alertsPerBatch {
		t.Fatalf("agent batch has %d alerts", len(alerts))
	}
	for _, a := range alerts {
		if len(a["decisions"].([]any)) != 1 {
			t.Fatalf("agent alert with %v decisions", a["decisions"])
		}
	}
}

func TestThousands(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -5000: "-5,000"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestCountWriter(t *testing.T) {
	data := bytes.Repeat([]byte(`{"value":"1.2.3.4"},`), 1000)
	for _, chunk := range []int{1, 2, 3, 7, 64, 4096, len(data)} {
		cw := &countWriter{pattern: []byte(`"value":"`)}
		for i := 0; i < len(data); i += chunk {
			_, _ = cw.Write(data[i:min(i+chunk, len(data))])
		}
		if cw.n != 1000 {
			t.Errorf("chunks of %d: counted %d, want 1000", chunk, cw.n)
		}
	}
}

// checkProfiles checks -profile-dir: a CPU profile (gzip-compressed
// protobuf) of each of the 3 nodes for an ingestion run through the leader
// and one through a follower, the load's node named entry.
func checkProfiles(t *testing.T, dir string) {
	t.Helper()
	for _, via := range []string{"via-leader", "via-follower"} {
		files, _ := filepath.Glob(filepath.Join(dir, "cluster_ingest-"+via+"-1-*.pprof"))
		if len(files) == 0 {
			files, _ = filepath.Glob(filepath.Join(dir, "cluster_ingest-"+via+"-2-*.pprof"))
		}
		if len(files) != 3 {
			t.Errorf("-profile-dir: %d cluster ingestion profiles %s in the first round, want 3 (one per node): %q", len(files), via, files)
			continue
		}
		entries := 0
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
				t.Errorf("-profile-dir: %s is not a gzip-compressed pprof profile (%d bytes, err %v)", f, len(b), err)
			}
			if strings.Contains(filepath.Base(f), "-entry-") {
				entries++
			}
		}
		if entries != 1 {
			t.Errorf("-profile-dir: %d of the %s profiles name the node the load went to (entry), want 1: %q", entries, via, files)
		}
	}
}

// A store that grows makes the second run of each round slower: the
// median of per-round ratios favours whichever contender ran first more
// often, balancedRatio does not.
func TestBalancedRatioCancelsDrift(t *testing.T) {
	ups := func(r loadResult) float64 { return r.UnitsPerS }
	// both contenders equal; each run is 5 % slower than the one before;
	// rounds alternate order: ref first, hal first, ref first
	var hal, ref []loadResult
	speed := 1000.0
	for r := range 3 {
		first, second := speed, speed*0.95
		speed *= 0.95 * 0.95
		if r%2 == 0 {
			ref, hal = append(ref, loadResult{UnitsPerS: first}), append(hal, loadResult{UnitsPerS: second})
		} else {
			hal, ref = append(hal, loadResult{UnitsPerS: first}), append(ref, loadResult{UnitsPerS: second})
		}
	}
	if p := pairedRatio(hal, ref, ups); math.Abs(p-0.95) > 1e-9 {
		t.Fatalf("pairedRatio %.4f, want the biased 0.95 (two rounds of three with hal second)", p)
	}
	if b := balancedRatio(hal, ref, ups); math.Abs(b-1) > 1e-9 {
		t.Fatalf("balancedRatio %.4f, want 1", b)
	}
	// a real difference stays: hal 10 % slower on top of the drift
	for i := range hal {
		hal[i].UnitsPerS *= 0.9
	}
	if b := balancedRatio(hal, ref, ups); math.Abs(b-0.9) > 1e-9 {
		t.Fatalf("balancedRatio %.4f, want 0.9", b)
	}
	if b := balancedRatio(hal[:1], ref[:1], ups); math.Abs(b-0.95*0.9) > 1e-9 {
		t.Fatalf("one round: %.4f, want its own ratio", b)
	}
}
