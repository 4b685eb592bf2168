package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// scrapeMetric reads one unlabelled sample from a /metrics endpoint.
func scrapeMetric(t testing.TB, metricsAddr, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+metricsAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, l)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exported", name)
	return 0
}

// TestStreamBouncersShareGzipStartup: twenty go-cs-bouncer v0.0.21
// StreamBouncers start at once against 5,000 decisions. Go's transport
// asks for gzip and gets it; every bouncer receives the whole list; the
// startups share encodings instead of making one each; a decision added
// afterwards reaches all of them.
func TestStreamBouncersShareGzipStartup(t *testing.T) {
	metricsAddr := freeLoopbackAddr(t)
	s := NewServer(t)
	s.ExtraArgs = append(s.ExtraArgs, "--metrics-listen", metricsAddr)
	s.Start()
	w := addMachine(t, s, "cscli-scale", "e2e-cscli-scale-password-0123456789")
	s.waitListed("machines", "cscli-scale", "is validated (machines add)", fieldIs("is_validated", true))

	const n = 5000
	a := cscliAlert("Ip", "10.0.0.0", "4h", "ban", "e2e")
	a.Decisions = nil
	for i := 0; i < n; i++ {
		a.Decisions = append(a.Decisions, &models.Decision{Duration: ptr("4h"), Scope: ptr("Ip"), Type: ptr("ban"),
			Value: ptr(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)), Scenario: ptr("import"), Origin: ptr("cscli-import")})
	}
	pushAlerts(t, w, a)

	// A raw startup with Go's default transport: gzip on the wire,
	// decoded by the transport, the whole list.
	const rawKey = "e2e-scale-raw-bouncer-key-0123456789abcdef"
	addBouncer(t, s, "scale-raw", rawKey)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"v1/decisions/stream?startup=true", nil)
	req.Header.Set("X-Api-Key", rawKey)
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatalf("GET stream: %v", err)
	}
	var raw models.DecisionsStreamResponse
	err = json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET stream: status %d, %v", resp.StatusCode, err)
	}
	if !resp.Uncompressed {
		t.Errorf("the startup stream was not gzip-compressed for a client that asked for it")
	}
	if len(raw.New) != n {
		t.Fatalf("raw startup: %d new decisions, want %d", len(raw.New), n)
	}

	const bouncers = 20
	keys := make([]string, bouncers)
	for i := range keys {
		keys[i] = fmt.Sprintf("e2e-scale-bouncer-%02d-key-0123456789abcdef", i)
		addBouncer(t, s, fmt.Sprintf("scale-%02d", i), keys[i])
	}
	before := scrapeMetric(t, metricsAddr, "halapi_stream_encodings_total")
	sharedBefore := scrapeMetric(t, metricsAddr, "halapi_stream_shared_total")
	rs := make([]*runningStream, bouncers)
	for i := range rs {
		rs[i] = startStream(t, s, keys[i])
	}
	for i, r := range rs {
		first := r.next(t, streamWait)
		if len(first.New) != n {
			t.Fatalf("bouncer %d: startup has %d new decisions, want %d", i, len(first.New), n)
		}
		if d := decisionsFor(first.New, "10.0.19.135"); len(d) != 1 {
			t.Fatalf("bouncer %d: decision 10.0.19.135 missing", i)
		} else {
			checkDecision(t, "startup 10.0.19.135", d[0], "cscli-import", "ban", "Ip", "10.0.19.135")
			checkDuration(t, "startup 10.0.19.135", d[0].Duration, 4*time.Hour, 2*time.Minute)
		}
	}
	made := scrapeMetric(t, metricsAddr, "halapi_stream_encodings_total") - before
	shared := scrapeMetric(t, metricsAddr, "halapi_stream_shared_total") - sharedBefore
	t.Logf("%d startups: %v encodings, %v served from a shared one", bouncers, made, shared)
	if made+shared != bouncers {
		t.Errorf("%v encodings + %v shared answers for %d startups", made, shared, bouncers)
	}
	if made >= bouncers || shared == 0 {
		t.Errorf("%d concurrent identical startups made %v encodings (%v shared): nothing was shared", bouncers, made, shared)
	}

	addDecision(t, w, "Ip", "192.0.2.7", "1h")
	for i, r := range rs {
		got := r.waitFor(t, "192.0.2.7 in new", func(resp *models.DecisionsStreamResponse) bool {
			return len(decisionsFor(resp.New, "192.0.2.7")) > 0
		})
		if len(got.New) > 10 {
			t.Errorf("bouncer %d: the delta after startup holds %d decisions", i, len(got.New))
		}
	}
}
