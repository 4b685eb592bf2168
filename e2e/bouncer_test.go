package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// streamWait bounds every wait for a stream answer.
const streamWait = 10 * time.Second

// runningStream is a go-cs-bouncer StreamBouncer running in a goroutine.
type runningStream struct {
	b      *csbouncer.StreamBouncer
	cancel context.CancelFunc
	errc   chan error // Run's result
	seen   []string   // summaries of the answers received, for failure messages
}

// startStream initialises a StreamBouncer polling every 200ms and runs it
// until the test ends.
func startStream(t testing.TB, s *Server, key string) *runningStream {
	t.Helper()

	b := &csbouncer.StreamBouncer{
		APIKey:         key,
		APIUrl:         s.URL,
		TickerInterval: "200ms",
		UserAgent:      "e2e-stream-bouncer/v0.0.21",
	}
	if err := b.Init(); err != nil {
		t.Fatalf("StreamBouncer.Init: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	r := &runningStream{b: b, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- b.Run(ctx) }()

	t.Cleanup(func() {
		cancel()
		select {
		case <-r.errc:
		case <-time.After(callTimeout + callGrace):
			t.Errorf("StreamBouncer.Run did not return %s after cancel", callTimeout+callGrace)
		}
	})

	return r
}

// recv waits up to timeout for the next answer the bouncer hands to the
// application; ok is false on timeout. A stopped bouncer fails the test.
func (r *runningStream) recv(t testing.TB, timeout time.Duration) (resp *models.DecisionsStreamResponse, ok bool) {
	t.Helper()

	timer := time.NewTimer(timeout)
	defer timer.Stop()

	select {
	case resp, open := <-r.b.Stream:
		if !open {
			err := <-r.errc
			t.Fatalf("stream bouncer stopped: %v (answers so far: %s)", err, r.history())
		}
		if resp == nil {
			resp = &models.DecisionsStreamResponse{}
		}
		r.seen = append(r.seen, fmt.Sprintf("new=%s deleted=%s", fmtDecisions(resp.New), fmtDecisions(resp.Deleted)))
		return resp, true
	case <-timer.C:
		return nil, false
	}
}

// history summarises the answers received (the last few).
func (r *runningStream) history() string {
	const keep = 8
	seen := r.seen
	prefix := ""
	if len(seen) > keep {
		prefix = fmt.Sprintf("(%d earlier) ", len(seen)-keep)
		seen = seen[len(seen)-keep:]
	}
	return prefix + strings.Join(seen, " | ")
}

// next returns the next answer.
func (r *runningStream) next(t testing.TB, timeout time.Duration) *models.DecisionsStreamResponse {
	t.Helper()

	resp, ok := r.recv(t, timeout)
	if !ok {
		t.Fatalf("no stream answer within %s (answers so far: %s)", timeout, r.history())
	}

	return resp
}

// waitFor reads answers until pred accepts one, for at most streamWait.
func (r *runningStream) waitFor(t testing.TB, what string, pred func(*models.DecisionsStreamResponse) bool) *models.DecisionsStreamResponse {
	t.Helper()

	deadline := time.Now().Add(streamWait)
	for {
		resp, ok := r.recv(t, time.Until(deadline))
		if !ok {
			t.Fatalf("stream: %s did not happen within %s; answers: %s", what, streamWait, r.history())
		}
		if pred(resp) {
			return resp
		}
	}
}

// TestStreamBouncer runs a go-cs-bouncer StreamBouncer against the server: the
// startup answer carries the active set (deduplicated, Ip/Range only), a
// decision added later arrives in "new", and its deletion in "deleted".
func TestStreamBouncer(t *testing.T) {
	s := StartServer(t)
	w := addMachine(t, s, "cscli-stream", "e2e-cscli-stream-password-0123456789")
	const key = "e2e-stream-bouncer-key-0123456789abcdef"
	addBouncer(t, s, "stream-1", key)

	// Decisions present before the bouncer starts.
	s.waitListed("machines", "cscli-stream", "is validated (machines add)", fieldIs("is_validated", true))
	s.waitListed("bouncers", "stream-1", "has not pulled yet", fieldIs("last_pull", nil))

	addDecision(t, w, "Ip", "5.6.7.8", "1h")
	addDecision(t, w, "Ip", "5.6.7.8", "3h") // longer: the only one streamed for 5.6.7.8
	addDecision(t, w, "Range", "10.0.0.0/24", "2h")
	addDecision(t, w, "Username", "bob", "1h") // not Ip/Range: not in the default stream scopes

	r := startStream(t, s, key)

	first := r.next(t, streamWait)
	if len(first.Deleted) != 0 {
		t.Errorf("startup deleted = %s, want empty", fmtDecisions(first.Deleted))
	}
	if len(first.New) != 2 {
		t.Fatalf("startup new = %s, want exactly the 3h ban on 5.6.7.8 and the /24 ban", fmtDecisions(first.New))
	}
	ip := decisionsFor(first.New, "5.6.7.8")
	if len(ip) != 1 {
		t.Fatalf("startup new has %d decisions for 5.6.7.8 (%s), want 1 (longest wins)", len(ip), fmtDecisions(first.New))
	}
	checkDecision(t, "startup 5.6.7.8", ip[0], "cscli", "ban", "Ip", "5.6.7.8")
	checkDuration(t, "startup 5.6.7.8", ip[0].Duration, 3*time.Hour, 2*time.Minute)
	rng := decisionsFor(first.New, "10.0.0.0/24")
	if len(rng) != 1 {
		t.Fatalf("startup new = %s, want the /24 ban once", fmtDecisions(first.New))
	}
	checkDecision(t, "startup 10.0.0.0/24", rng[0], "cscli", "ban", "Range", "10.0.0.0/24")
	checkDuration(t, "startup 10.0.0.0/24", rng[0].Duration, 2*time.Hour, 2*time.Minute)

	// A decision added while the bouncer runs arrives in "new".
	alertID := addDecision(t, w, "Ip", "9.9.9.9", "1h")
	added := r.waitFor(t, "9.9.9.9 in new", func(resp *models.DecisionsStreamResponse) bool {
		return len(decisionsFor(resp.New, "9.9.9.9")) > 0
	})
	d := decisionsFor(added.New, "9.9.9.9")[0]
	checkDecision(t, "stream new 9.9.9.9", d, "cscli", "ban", "Ip", "9.9.9.9")
	checkDuration(t, "stream new 9.9.9.9", d.Duration, time.Hour, 2*time.Minute)
	if d.UUID == "" {
		t.Errorf("stream new 9.9.9.9: no uuid")
	}
	if got := decisionsFor(added.Deleted, "9.9.9.9"); len(got) != 0 {
		t.Errorf("9.9.9.9 both added and deleted in one answer: %s", fmtDecisions(got))
	}

	// Its alert carries the same decision id.
	if a := getAlert(t, w, alertID); len(a.Decisions) != 1 || a.Decisions[0].ID != d.ID {
		t.Fatalf("alert %d decisions %s, want the streamed decision id %d", alertID, fmtDecisions(a.Decisions), d.ID)
	}

	// cscli decisions delete --id: the decision arrives in "deleted".
	if n := deleteDecisionByID(t, w, d.ID); n != "1" {
		t.Fatalf("delete decision %d: nbDeleted %q", d.ID, n)
	}
	gone := r.waitFor(t, "9.9.9.9 in deleted", func(resp *models.DecisionsStreamResponse) bool {
		return len(decisionsFor(resp.Deleted, "9.9.9.9")) > 0
	})
	del := decisionsFor(gone.Deleted, "9.9.9.9")[0]
	if del.ID != d.ID || str(del.Type) != "ban" || str(del.Scope) != "Ip" {
		t.Fatalf("stream deleted 9.9.9.9: %s, want decision id %d (ban, Ip)", fmtDecisions(gone.Deleted), d.ID)
	}
	if got := decisionsFor(gone.New, "9.9.9.9"); len(got) != 0 {
		t.Errorf("9.9.9.9 back in new after deletion: %s", fmtDecisions(got))
	}

	// cscli decisions delete --range: the range ban arrives in "deleted" too.
	if n := deleteDecisions(t, w, apiclient.DecisionsDeleteOpts{RangeEquals: "10.0.0.0/24"}); n != "1" {
		t.Fatalf("delete decisions range=10.0.0.0/24: nbDeleted %q, want \"1\"", n)
	}
	r.waitFor(t, "10.0.0.0/24 in deleted", func(resp *models.DecisionsStreamResponse) bool {
		return len(decisionsFor(resp.Deleted, "10.0.0.0/24")) > 0
	})

	// The bouncer row records its first contact, User-Agent and pulls.
	s.waitListed("bouncers", "stream-1", "has the client IP", fieldIs("ip_address", "127.0.0.1"))
	s.waitListed("bouncers", "stream-1", "has the type from the User-Agent", fieldIs("type", "e2e-stream-bouncer"))
	s.waitListed("bouncers", "stream-1", "has the version from the User-Agent", fieldIs("version", "v0.0.21"))
	s.waitListed("bouncers", "stream-1", "has a last pull", fieldSet("last_pull"))
}

// TestLiveBouncer queries decisions as a live-mode bouncer does: an address
// inside a banned range gets the range decision, unknown addresses nothing.
func TestLiveBouncer(t *testing.T) {
	s := StartServer(t)
	w := addMachine(t, s, "cscli-live", "e2e-cscli-live-password-0123456789")
	const key = "e2e-live-bouncer-key-0123456789abcdef"
	addBouncer(t, s, "live-1", key)

	addDecision(t, w, "Range", "10.0.0.0/24", "1h")
	addDecision(t, w, "Ip", "1.2.3.4", "2h")

	lb := newLiveBouncer(t, s, key)

	got := liveGet(t, lb, "10.0.0.7")
	if len(got) != 1 {
		t.Fatalf("Get(10.0.0.7) = %s, want the 10.0.0.0/24 ban", fmtDecisions(got))
	}
	checkDecision(t, "Get(10.0.0.7)", got[0], "cscli", "ban", "Range", "10.0.0.0/24")
	checkDuration(t, "Get(10.0.0.7)", got[0].Duration, time.Hour, 2*time.Minute)

	got = liveGet(t, lb, "1.2.3.4")
	if len(got) != 1 {
		t.Fatalf("Get(1.2.3.4) = %s, want the Ip ban", fmtDecisions(got))
	}
	checkDecision(t, "Get(1.2.3.4)", got[0], "cscli", "ban", "Ip", "1.2.3.4")
	checkDuration(t, "Get(1.2.3.4)", got[0].Duration, 2*time.Hour, 2*time.Minute)

	for _, ip := range []string{"192.0.2.99", "10.0.1.7", "1.2.3.5", "2001:db8::1"} {
		if got := liveGet(t, lb, ip); len(got) != 0 {
			t.Errorf("Get(%s) = %s, want no decision", ip, fmtDecisions(got))
		}
	}
}

// TestBouncerErrors checks what real bouncers see with a wrong API key: 403
// from the live query and a stream bouncer that stops on its first call.
func TestBouncerErrors(t *testing.T) {
	s := StartServer(t)
	addBouncer(t, s, "good", "e2e-good-bouncer-key-0123456789")

	lb := newLiveBouncer(t, s, "e2e-wrong-bouncer-key")
	_, err := call("LiveBouncer.Get", func(ctx context.Context) (*models.GetDecisionsResponse, error) {
		return lb.Get(ctx, "1.2.3.4")
	})
	if err == nil {
		t.Fatalf("LiveBouncer.Get with a wrong key: no error")
	}
	code, err := call("Decisions.List", func(ctx context.Context) (int, error) {
		_, resp, err := lb.APIClient.Decisions.List(ctx, apiclient.DecisionsListOpts{IPEquals: "1.2.3.4"})
		return statusOf(resp), err
	})
	if err == nil || code != 403 {
		t.Fatalf("decisions query with a wrong key: status %d, err %v; want 403", code, err)
	}
	if msg := apiErrorMessage(err); msg != "access forbidden" {
		t.Errorf("wrong key: message %q, want \"access forbidden\"", msg)
	}

	// The stream bouncer's first call fails: Run closes the stream and returns the error.
	b := &csbouncer.StreamBouncer{APIKey: "e2e-wrong-bouncer-key", APIUrl: s.URL, TickerInterval: "200ms"}
	if err := b.Init(); err != nil {
		t.Fatalf("StreamBouncer.Init: %v", err)
	}
	runErr, err := call("StreamBouncer.Run", func(ctx context.Context) (error, error) {
		return b.Run(ctx), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if runErr == nil || errors.Is(runErr, context.DeadlineExceeded) || !strings.Contains(runErr.Error(), "access forbidden") {
		t.Fatalf("StreamBouncer.Run with a wrong key returned %v, want an \"access forbidden\" error", runErr)
	}
	if _, open := <-b.Stream; open {
		t.Fatalf("stream channel still open after a failed startup call")
	}
}
