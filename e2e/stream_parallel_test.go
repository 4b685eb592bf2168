package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// TestStreamParallelStartupRealClients: a startup answer big enough to be
// encoded in parts on several cores and gzip-compressed in several blocks
// (70,000 decisions, ~12 MB of JSON: 2 parts, 12 deflate blocks), with
// outranked duplicates, read by go-cs-bouncer v0.0.21's StreamBouncer and
// by Go's transport with and without gzip: every value exactly once, with
// the longest decision's duration.
func TestStreamParallelStartupRealClients(t *testing.T) {
	s := NewServer(t)
	s.Start()
	w := addMachine(t, s, "cscli-par", "e2e-cscli-par-password-0123456789")
	s.waitListed("machines", "cscli-par", "is validated (machines add)", fieldIs("is_validated", true))

	const n, perAlert, dups = 70000, 10000, 500
	value := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
	for k := 0; k < n/perAlert; k++ {
		a := cscliAlert("Ip", "10.0.0.0", "4h", "ban", "e2e")
		a.Decisions = nil
		for i := k * perAlert; i < (k+1)*perAlert; i++ {
			a.Decisions = append(a.Decisions, &models.Decision{Duration: ptr("4h"), Scope: ptr("Ip"), Type: ptr("ban"),
				Value: ptr(value(i)), Scenario: ptr("import"), Origin: ptr("cscli-import")})
		}
		pushAlerts(t, w, a)
	}
	// shorter bans on values spread over the whole list: outranked
	a := cscliAlert("Ip", "10.0.0.0", "1h", "ban", "e2e")
	a.Decisions = nil
	for i := 0; i < dups; i++ {
		a.Decisions = append(a.Decisions, &models.Decision{Duration: ptr("1h"), Scope: ptr("Ip"), Type: ptr("ban"),
			Value: ptr(value(i * (n / dups))), Scenario: ptr("dup"), Origin: ptr("cscli")})
	}
	pushAlerts(t, w, a)

	check := func(what string, ds []*models.Decision) {
		t.Helper()
		if len(ds) != n {
			t.Fatalf("%s: %d new decisions, want %d", what, len(ds), n)
		}
		seen := make(map[string]bool, n)
		for _, d := range ds {
			if d.Value == nil || seen[*d.Value] {
				t.Fatalf("%s: value %v listed twice or missing", what, d.Value)
			}
			seen[*d.Value] = true
		}
		for _, i := range []int{0, n / 2, n - 1, 7 * (n / dups)} {
			got := decisionsFor(ds, value(i))
			if len(got) != 1 {
				t.Fatalf("%s: %s listed %d times", what, value(i), len(got))
			}
			checkDecision(t, what+" "+value(i), got[0], "cscli-import", "ban", "Ip", value(i))
			checkDuration(t, what+" "+value(i), got[0].Duration, 4*time.Hour, 2*time.Minute)
		}
	}

	const key = "e2e-par-bouncer-key-0123456789abcdef"
	addBouncer(t, s, "par", key)
	for _, gz := range []bool{true, false} {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"v1/decisions/stream?startup=true", nil)
		req.Header.Set("X-Api-Key", key)
		resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: !gz}}).Do(req)
		if err != nil {
			cancel()
			t.Fatalf("GET stream (gzip %v): %v", gz, err)
		}
		var got models.DecisionsStreamResponse
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		cancel()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET stream (gzip %v): status %d, %v", gz, resp.StatusCode, err)
		}
		if resp.Uncompressed != gz {
			t.Fatalf("GET stream: asked for gzip %v, transparently decompressed %v", gz, resp.Uncompressed)
		}
		check(fmt.Sprintf("Go transport, gzip %v", gz), got.New)
	}

	r := startStream(t, s, key)
	first := r.next(t, streamWait)
	check("go-cs-bouncer startup", first.New)
}
