package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// The console's first render measured in the browser (issue 15: "the
// page's first render on a node holding 50,000 decisions in < 200 ms").
// The server's share (time to the last byte) is also in `make bench`
// (phase ui); this adds what the browser does with the page: navigation
// timing of /ui/decisions, a signed-in operator's fresh navigation each
// time, on a node (HTTPS, built-in CA) holding 50,000 decisions. The
// first render is the first contentful paint (as presented: the paint
// timing's startTime); the target is judged on it.
//
// Opt-in (loading 50,000 decisions and the navigations take ~20 s):
//
//	HALAPI_UI_BENCH=1 go test -run TestUIRenderBenchmark -v ./...
//
// HALAPI_UI_BENCH_DECISIONS changes the count. The figures are printed
// with the target beside them and written to the artefact directory
// (render.json); a slow figure is reported, not failed (the machine may be
// shared).

const (
	uiRenderTargetMS = 200
	uiRenderRuns     = 9
)

// navTiming is what the page's Navigation Timing and Paint Timing say,
// in ms from the start of the navigation.
type navTiming struct {
	ResponseStart float64 `json:"responseStart"`
	ResponseEnd   float64 `json:"responseEnd"`
	DOMInteract   float64 `json:"domInteractive"`
	DOMContent    float64 `json:"domContentLoadedEventEnd"`
	Load          float64 `json:"loadEventEnd"`
	FCP           float64 `json:"firstContentfulPaint"`
	FCPPaint      float64 `json:"firstContentfulPaintPainted"`
	Bytes         float64 `json:"decodedBodySize"`
	Rows          float64 `json:"rows"`
}

const navTimingJS = `(() => {
  const n = performance.getEntriesByType("navigation")[0];
  const p = performance.getEntriesByName("first-contentful-paint")[0];
  if (!n || n.loadEventEnd === 0 || !p) return null;
  return {responseStart: n.responseStart, responseEnd: n.responseEnd,
    domInteractive: n.domInteractive, domContentLoadedEventEnd: n.domContentLoadedEventEnd, loadEventEnd: n.loadEventEnd,
    firstContentfulPaint: p.startTime, firstContentfulPaintPainted: p.paintTime ?? p.startTime, decodedBodySize: n.decodedBodySize,
    rows: document.querySelectorAll("#decisions tr[data-decision-id]").length};
})()`

func TestUIRenderBenchmark(t *testing.T) {
	if os.Getenv("HALAPI_UI_BENCH") != "1" {
		t.Skip("opt-in: HALAPI_UI_BENCH=1 (loads 50,000 decisions, ~20 s)")
	}
	requireConsole(t)
	chromiumBin(t)
	n := 50000
	if v := os.Getenv("HALAPI_UI_BENCH_DECISIONS"); v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 || n > 1<<20 {
			t.Fatalf("HALAPI_UI_BENCH_DECISIONS=%q: want 1..%d", v, 1<<20)
		}
	}

	sc := newSecureCluster(t)
	nd := sc.Found()
	ag := issueCert(t, nd, "agent", "ui-bench-loader", nd.URL)
	w := newCertAgent(t, loadAgentCredentials(t, ag.Cfg), nd.URL)
	if code, err := certLogin(w); code != 200 {
		t.Fatalf("agent login: %d %v", code, err)
	}
	loadStart := time.Now()
	const perAlert = 10000
	for first := 0; first < n; first += perAlert {
		a := cscliAlert("Ip", "10.0.0.0", "4h", "ban", "e2e")
		a.Decisions = nil
		for i := first; i < min(n, first+perAlert); i++ {
			a.Decisions = append(a.Decisions, &models.Decision{Duration: ptr("4h"), Scope: ptr("Ip"), Type: ptr("ban"),
				Value: ptr(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)), Scenario: ptr("crowdsecurity/ssh-bf"), Origin: ptr("cscli-import")})
		}
		pushAlerts(t, w, a)
	}
	t.Logf("loaded %d decisions in %s", n, time.Since(loadStart).Round(time.Millisecond))

	b := StartBrowser(t, TrustCA(sc.CAFile))
	signIn(t, b, uiLogin(t, nd, "bench"), "bench")
	page := strings.TrimSuffix(nd.URL, "/") + "/ui/decisions"
	var runs []navTiming
	for i := range uiRenderRuns + 1 {
		b.Open(page)
		var nt navTiming
		b.WaitJS(browserStepTimeout, "navigation timing complete", navTimingJS+" !== null", `"load not finished"`)
		raw := mustEval[json.RawMessage](b, navTimingJS)
		if err := json.Unmarshal(raw, &nt); err != nil {
			t.Fatalf("navigation timing %s: %v", raw, err)
		}
		if nt.Rows == 0 {
			t.Fatalf("/ui/decisions on %d decisions shows no row", n)
		}
		if i == 0 {
			t.Logf("first navigation (TLS handshake, cold caches): %+v", nt)
			b.Shot("decisions-50k")
			continue
		}
		runs = append(runs, nt)
	}

	med := func(f func(navTiming) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	res := map[string]float64{
		"decisions":                         float64(n),
		"runs":                              float64(len(runs)),
		"response_start_ms":                 med(func(r navTiming) float64 { return r.ResponseStart }),
		"response_end_ms":                   med(func(r navTiming) float64 { return r.ResponseEnd }),
		"dom_interactive_ms":                med(func(r navTiming) float64 { return r.DOMInteract }),
		"dom_content_loaded_ms":             med(func(r navTiming) float64 { return r.DOMContent }),
		"first_contentful_paint_painted_ms": med(func(r navTiming) float64 { return r.FCPPaint }),
		"first_contentful_paint_ms":         med(func(r navTiming) float64 { return r.FCP }),
		"load_ms":                           med(func(r navTiming) float64 { return r.Load }),
		"page_kib":                          runs[0].Bytes / 1024,
		"rows":                              runs[0].Rows,
	}
	verdict := func(v float64) string {
		if v < uiRenderTargetMS {
			return "PASS"
		}
		return "MISSED"
	}
	t.Logf("console /ui/decisions in Chromium, %d decisions (%d rows, %.0f KiB), median of %d navigations:", n, int(res["rows"]), res["page_kib"], len(runs))
	t.Logf("  responseEnd (last byte)     %7.1f ms", res["response_end_ms"])
	t.Logf("  DOM interactive (parsed)    %7.1f ms", res["dom_interactive_ms"])
	t.Logf("  DOMContentLoaded            %7.1f ms", res["dom_content_loaded_ms"])
	t.Logf("  first contentful paint      %7.1f ms   (painted at %.1f ms)   target < %d ms: %s", res["first_contentful_paint_ms"],
		res["first_contentful_paint_painted_ms"], uiRenderTargetMS, verdict(res["first_contentful_paint_ms"]))
	t.Logf("  load                        %7.1f ms", res["load_ms"])
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		t.Logf("  load average now: %s (a busy machine slows every browser figure)", strings.TrimSpace(string(la)))
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	p := filepath.Join(b.dir, "render.json")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", p)
}
