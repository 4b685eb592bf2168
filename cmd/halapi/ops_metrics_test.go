package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// serveDescriptors runs `serve` in-process (plain HTTP on loopback, no
// metrics listener) and returns the text of every metric descriptor its
// registry holds, observed or not (a labelled metric with no sample yet is
// absent from /metrics but described).
func serveDescriptors(t *testing.T) []string {
	t.Helper()
	got := make(chan *prometheus.Registry, 1)
	metricsHook = func(r *prometheus.Registry) { got <- r }
	defer func() { metricsHook = nil }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := serveCmd()
	c.SetArgs([]string{"--data-dir", t.TempDir(), "--listen", freeAddr(t), "--plain-http", "--metrics-listen", "", "--log-level", "error"})
	done := make(chan error, 1)
	go func() { done <- c.ExecuteContext(ctx) }()
	var reg *prometheus.Registry
	select {
	case reg = <-got:
	case err := <-done:
		t.Fatalf("serve exited: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not register its metrics within 30 s")
	}
	ch := make(chan *prometheus.Desc, 64)
	go func() { reg.Describe(ch); close(ch) }()
	var descs []string
	for d := range ch {
		descs = append(descs, d.String())
	}
	cancel()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	return descs
}

// describedMetrics is the name of every metric serve describes.
func describedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for _, d := range serveDescriptors(t) {
		if m := re.FindStringSubmatch(d); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

func repoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var metricRef = regexp.MustCompile(`\b(?:cs|halapi|go|process)_[a-zA-Z0-9_]+`)

// known reports whether ref is a described metric or one of the series
// a histogram or summary exposes.
func known(names map[string]bool, ref string) bool {
	if names[ref] {
		return true
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(ref, suf) && names[strings.TrimSuffix(ref, suf)] {
			return true
		}
	}
	return false
}

// Every metric the server registers is documented in docs/metrics.md
// (the Go runtime and process collectors as one row), every documented
// one exists, and every series the Grafana dashboard queries exists.
func TestMetricsDocumentedAndDashboard(t *testing.T) {
	names := describedMetrics(t)
	for _, must := range []string{"cs_lapi_request_duration_seconds", "halapi_raft_commit_index", "halapi_capi_requests_total",
		"halapi_pki_cert_not_after_timestamp_seconds", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes"} {
		if !names[must] {
			t.Fatalf("%s not described; got %v", must, names)
		}
	}

	doc := string(repoFile(t, "docs/metrics.md"))
	row := regexp.MustCompile("(?m)^\\| `([a-z_:]+)` \\|")
	documented := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		documented[m[1]] = true
		if !names[m[1]] {
			t.Errorf("docs/metrics.md documents %s, which the server does not register", m[1])
		}
	}
	var missing []string
	for n := range names {
		if !documented[n] && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") {
			missing = append(missing, n)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics not documented in docs/metrics.md: %v", missing)
	}

	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw := repoFile(t, "dist/grafana/halapi.json")
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dist/grafana/halapi.json: %v", err)
	}
	if dash.UID == "" || len(dash.Panels) < 10 {
		t.Fatalf("dashboard: uid %q, %d panels", dash.UID, len(dash.Panels))
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			refs := metricRef.FindAllString(tg.Expr, -1)
			if len(refs) == 0 {
				t.Errorf("panel %q: query %q uses no halapi metric", p.Title, tg.Expr)
			}
			for _, r := range refs {
				used[r] = true
				if !known(names, r) {
					t.Errorf("panel %q queries %s, which the server does not export", p.Title, r)
				}
			}
		}
	}
	// the list: latency and rates by route, bouncer pulls, raft
	// leader, commit lag and apply time, CAPI sync, PKI expiries, memory
	for _, want := range []string{"cs_lapi_request_duration_seconds_bucket", "cs_lapi_route_requests_total", "cs_lapi_bouncer_requests_total",
		"halapi_raft_leader", "halapi_raft_commit_index", "halapi_raft_applied_index", "halapi_apply_duration_seconds_bucket",
		"halapi_capi_last_success_timestamp_seconds", "halapi_pki_cert_not_after_timestamp_seconds", "process_resident_memory_bytes"} {
		if !used[want] {
			t.Errorf("the dashboard does not chart %s", want)
		}
	}
}
