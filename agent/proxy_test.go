package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halapi/halapi/internal/testutil"
)

// backend is a fake halapi node on loopback whose behaviour the test
// switches: healthy or not, hanging, refusing writes.
type backend struct {
	t       *testing.T
	name    string
	srv     *httptest.Server
	healthy atomic.Bool
	hang    atomic.Bool // every handler blocks until the test ends
	stall   atomic.Bool // every request but /health blocks (alive but stuck)
	status  atomic.Int32
	// dieOnWrite: a POST is read in full, then the connection is cut
	// without an answer (the node died after receiving it).
	dieOnWrite atomic.Bool
	members    atomic.Pointer[string]

	mu   sync.Mutex
	got  []received
	done chan struct{}
}

type received struct {
	method, path, key, apiKey string
	body                      []byte
}

func newBackend(t *testing.T, name string) *backend {
	b := &backend{t: t, name: name, done: make(chan struct{})}
	b.healthy.Store(true)
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(func() {
		close(b.done)
		b.srv.CloseClientConnections()
		b.srv.Close()
	})
	return b
}

func (b *backend) serve(w http.ResponseWriter, r *http.Request) {
	if b.hang.Load() {
		select {
		case <-b.done:
		case <-r.Context().Done():
		}
		return
	}
	if r.URL.Path == "/health" {
		if !b.healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, `{"status":"up"}`)
		return
	}
	if b.stall.Load() {
		b.mu.Lock()
		b.got = append(b.got, received{r.Method, r.URL.Path, r.Header.Get(IdempotencyHeader), r.Header.Get("X-Api-Key"), nil})
		b.mu.Unlock()
		select {
		case <-b.done:
		case <-r.Context().Done():
		}
		return
	}
	if r.URL.Path == MembersPath {
		if r.Header.Get("X-Api-Key") != "members-key" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if m := b.members.Load(); m != nil {
			_, _ = io.WriteString(w, *m)
		}
		return
	}
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.got = append(b.got, received{r.Method, r.URL.Path, r.Header.Get(IdempotencyHeader), r.Header.Get("X-Api-Key"), body})
	b.mu.Unlock()
	if r.Method == http.MethodPost && b.dieOnWrite.Load() {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	if s := b.status.Load(); s != 0 {
		w.WriteHeader(int(s))
		_, _ = fmt.Fprintf(w, `{"message":"%s refuses"}`, b.name)
		return
	}
	w.Header().Set("X-Node", b.name)
	_, _ = fmt.Fprintf(w, `{"node":%q}`, b.name)
}

// kill makes the node vanish like a SIGKILLed process: open connections
// are cut, new ones refused.
func (b *backend) kill() {
	_ = b.srv.Listener.Close()
	b.srv.CloseClientConnections()
}

func (b *backend) requests() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.got...)
}

func startAgent(t *testing.T, cfg Config, bs ...*backend) (*Agent, *httptest.Server) {
	t.Helper()
	for _, b := range bs {
		cfg.Servers = append(cfg.Servers, b.srv.URL)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	front := httptest.NewServer(a.Handler())
	t.Cleanup(func() {
		front.Close()
		cancel()
		<-done
	})
	return a, front
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 5*time.Second, what, cond)
}

func do(t *testing.T, method, u, body string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, u, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// preferOnly makes the agent settle on first: the others are unhealthy
// until first is preferred, then healthy again.
func preferOnly(t *testing.T, a *Agent, first *backend, others ...*backend) {
	t.Helper()
	for _, o := range others {
		o.healthy.Store(false)
	}
	waitUntil(t, "the agent to prefer "+first.name, func() bool { return a.Preferred() == first.srv.URL })
	for _, o := range others {
		o.healthy.Store(true)
	}
	waitUntil(t, "every node healthy", func() bool {
		for _, n := range a.Status().Nodes {
			if !n.Healthy {
				return false
			}
		}
		return true
	})
}

func TestRequestsMoveWhenPreferredNodeDies(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, front := startAgent(t, Config{}, x, y)
	preferOnly(t, a, x, y)

	code, body, _ := do(t, "GET", front.URL+"/v1/decisions?ip=1.2.3.4", "", "X-Api-Key", "k")
	if code != 200 || !strings.Contains(body, `"x"`) {
		t.Fatalf("before the kill: %d %s, want node x", code, body)
	}
	// preferOnly may itself have moved the agent off y (when y was picked
	// first), so count the failovers from here.
	before := a.Status().Failovers
	x.kill()
	start := time.Now()
	code, body, _ = do(t, "GET", front.URL+"/v1/decisions?ip=1.2.3.4", "", "X-Api-Key", "k")
	if code != 200 || !strings.Contains(body, `"y"`) {
		t.Fatalf("after the kill: %d %s, want node y", code, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the request took %v to move", d)
	}
	if got := y.requests(); len(got) != 1 || got[0].apiKey != "k" {
		t.Fatalf("node y got %+v, want the request with its API key", got)
	}
	st := a.Status()
	if st.Preferred != y.srv.URL || st.Failovers-before != 1 {
		t.Fatalf("status after the kill: preferred %s (y is %s), %d failovers since the kill", st.Preferred, y.srv.URL, st.Failovers-before)
	}
}

// A node that accepts and never answers (hung, SIGSTOPped) is noticed by
// its health check; the request in flight moves within a second.
func TestHungNodeRequestMoves(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, front := startAgent(t, Config{}, x, y)
	preferOnly(t, a, x, y)
	x.hang.Store(true)
	start := time.Now()
	code, body, _ := do(t, "GET", front.URL+"/v1/decisions/stream?startup=true", "", "X-Api-Key", "k")
	if code != 200 || !strings.Contains(body, `"y"`) {
		t.Fatalf("got %d %s, want node y", code, body)
	}
	d := time.Since(start)
	t.Logf("request moved off the hung node after %v", d)
	if d > 1500*time.Millisecond {
		t.Fatalf("the request took %v to leave the hung node", d)
	}
}

// A write whose node dies after receiving it is replayed on another node
// with the same body and the same Idempotency-Key.
func TestWriteReplayedWithSameKey(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, front := startAgent(t, Config{}, x, y)
	preferOnly(t, a, x, y)
	x.dieOnWrite.Store(true)
	payload := `[{"scenario":"ssh-bf"}]`
	code, body, _ := do(t, "POST", front.URL+"/v1/alerts", payload, "Authorization", "Bearer tok")
	if code != 200 || !strings.Contains(body, `"y"`) {
		t.Fatalf("got %d %s, want node y's answer", code, body)
	}
	gx, gy := x.requests(), y.requests()
	// x may see it twice: Go's transport resends a keyed request once on
	// a fresh connection when a reused one breaks.
	if len(gx) == 0 || len(gy) != 1 {
		t.Fatalf("x got %d, y got %d requests, want at least 1 and 1", len(gx), len(gy))
	}
	for _, g := range append(gx, gy...) {
		if g.key == "" || g.key != gy[0].key || !bytes.Equal(g.body, []byte(payload)) {
			t.Fatalf("attempt with key %q body %q, want key %q body %q", g.key, g.body, gy[0].key, payload)
		}
	}
	// A key the client chose is kept.
	do(t, "POST", front.URL+"/v1/alerts", payload, IdempotencyHeader, "client-chosen-key-0123")
	if g := y.requests(); g[len(g)-1].key != "client-chosen-key-0123" {
		t.Fatalf("client's key replaced by %q", g[len(g)-1].key)
	}
	// GETs carry no key.
	do(t, "GET", front.URL+"/v1/alerts", "")
	if g := y.requests(); g[len(g)-1].key != "" {
		t.Fatalf("GET got key %q", g[len(g)-1].key)
	}
}

func TestUnavailableMovesThenPassesThrough(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, front := startAgent(t, Config{RetryFor: 300 * time.Millisecond}, x, y)
	preferOnly(t, a, x, y)
	x.status.Store(http.StatusServiceUnavailable)
	code, body, _ := do(t, "DELETE", front.URL+"/v1/decisions?ip=1.2.3.4", "")
	if code != 200 || !strings.Contains(body, `"y"`) {
		t.Fatalf("got %d %s, want node y's answer", code, body)
	}
	y.status.Store(http.StatusServiceUnavailable)
	start := time.Now()
	code, body, _ = do(t, "DELETE", front.URL+"/v1/decisions?ip=1.2.3.4", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "refuses") {
		t.Fatalf("every node 503: got %d %s, want a node's 503", code, body)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Fatalf("every node 503: answered after %v, want rounds for RetryFor (300ms)", d)
	}
	// a node that gets its leader back during the rounds answers
	go func() {
		time.Sleep(100 * time.Millisecond) // y "elects" a leader while the agent goes round
		y.status.Store(0)
	}()
	if code, body, _ = do(t, "DELETE", front.URL+"/v1/decisions?ip=1.2.3.4", ""); code != 200 {
		t.Fatalf("a node recovering during the rounds: %d %s, want its 200", code, body)
	}
	// A 4xx or 500 is an answer: not retried.
	x.status.Store(http.StatusInternalServerError)
	y.status.Store(0)
	n := len(y.requests())
	if code, _, _ := do(t, "POST", front.URL+"/v1/alerts", "[]"); code != 500 {
		t.Fatalf("got %d, want node x's 500", code)
	}
	if len(y.requests()) != n {
		t.Fatal("a 500 was retried on another node")
	}
}

func TestBodyBoundedAndNoNode(t *testing.T) {
	x := newBackend(t, "x")
	a, front := startAgent(t, Config{MaxBody: 16, RequestTimeout: 700 * time.Millisecond}, x)
	waitUntil(t, "x preferred", func() bool { return a.Preferred() != "" })
	code, body, _ := do(t, "POST", front.URL+"/v1/alerts", strings.Repeat("a", 17))
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"message"`) {
		t.Fatalf("oversized body: %d %s", code, body)
	}
	if len(x.requests()) != 0 {
		t.Fatal("an oversized body reached a node")
	}
	x.kill()
	code, body, _ = do(t, "GET", front.URL+"/v1/decisions", "")
	if code != http.StatusBadGateway || !strings.Contains(body, "no node answered") {
		t.Fatalf("no node: %d %s", code, body)
	}
}

func TestMembersAreLearnedAndForgotten(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	list := func(urls ...string) {
		var ms []map[string]string
		for i, u := range urls {
			ms = append(ms, map[string]string{"id": fmt.Sprintf("n%d", i+1), "api_url": u, "state": "alive"})
		}
		b, _ := json.Marshal(map[string]any{"members": ms})
		s := string(b)
		x.members.Store(&s)
	}
	list(x.srv.URL+"/", y.srv.URL+"/", "http://0.0.0.0:9/", "ftp://example.org/", "http://user@127.0.0.1:9/")
	a, _ := startAgent(t, Config{APIKey: "members-key", MembersEvery: 50 * time.Millisecond}, x)
	waitUntil(t, "y learned from the member list", func() bool { return len(a.Status().Nodes) == 2 })
	for _, n := range a.Status().Nodes {
		if n.URL == y.srv.URL && (n.Static || n.ID != "n2") {
			t.Fatalf("learned node %+v", n)
		}
	}
	waitUntil(t, "y healthy", func() bool {
		for _, n := range a.Status().Nodes {
			if n.URL == y.srv.URL {
				return n.Healthy
			}
		}
		return false
	})
	list(x.srv.URL + "/")
	waitUntil(t, "y forgotten", func() bool { return len(a.Status().Nodes) == 1 })
	// a --server node is never forgotten
	list(y.srv.URL + "/")
	r0 := a.memberRefreshes.Load()
	waitUntil(t, "three more member refreshes", func() bool { return a.memberRefreshes.Load() >= r0+3 })
	if st := a.Status(); len(st.Nodes) != 2 {
		t.Fatalf("nodes %+v, want x (static) and y", st.Nodes)
	}
}

func TestNewRefusesBadServers(t *testing.T) {
	for _, s := range []string{"", "ftp://x:1/", "http://0.0.0.0:8080/", "http://h:1/v1", "http://u:p@h:1/", "http://h:1/?a=b"} {
		if _, err := New(Config{Servers: []string{s}}); err == nil {
			t.Errorf("server %q accepted", s)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("no server accepted")
	}
}

// A node that is alive (health checks pass) but stuck on a request — a
// follower forwarding a write to a hung leader — gets a second copy of a
// deduplicated write sent to another node after HedgeAfter; the first
// answer wins. A write the nodes do not deduplicate is never hedged.
func TestHedgedWriteOnStuckNode(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, front := startAgent(t, Config{HedgeAfter: 200 * time.Millisecond, RequestTimeout: 1500 * time.Millisecond}, x, y)
	preferOnly(t, a, x, y)
	x.stall.Store(true)
	start := time.Now()
	code, body, _ := do(t, "POST", front.URL+"/v1/alerts", `[{"scenario":"a"}]`)
	if code != 200 || !strings.Contains(body, `"y"`) {
		t.Fatalf("got %d %s, want node y's answer", code, body)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("hedged write answered after %v", d)
	}
	gx, gy := x.requests(), y.requests()
	if len(gx) != 1 || len(gy) != 1 || gx[0].key == "" || gx[0].key != gy[0].key {
		t.Fatalf("x got %+v, y got %+v: want one copy each with the same key", gx, gy)
	}
	code, _, _ = do(t, "POST", front.URL+"/v1/watchers/login", `{"machine_id":"m"}`)
	if code != http.StatusBadGateway {
		t.Fatalf("login on a stuck node: %d, want 502 after the request timeout", code)
	}
	for _, g := range y.requests() {
		if g.path == "/v1/watchers/login" {
			t.Fatal("a login (not deduplicated by the nodes) was hedged")
		}
	}
}

// Every node stuck at first (followers forwarding to a hung leader): a
// deduplicated write keeps being hedged in rounds, and the first node to
// come unstuck answers a fresh copy. Reads are hedged once only.
func TestHedgeRoundsForWrites(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, front := startAgent(t, Config{HedgeAfter: 100 * time.Millisecond, RequestTimeout: 3 * time.Second}, x, y)
	preferOnly(t, a, x, y)
	x.stall.Store(true)
	y.stall.Store(true)
	go func() {
		time.Sleep(350 * time.Millisecond) // y learns the new leader
		y.stall.Store(false)
	}()
	code, body, _ := do(t, "DELETE", front.URL+"/v1/decisions?ip=192.0.2.1", "")
	if code != 200 || !strings.Contains(body, `"y"`) {
		t.Fatalf("got %d %s, want y's answer to a later copy", code, body)
	}
	keys := map[string]bool{}
	for _, g := range append(x.requests(), y.requests()...) {
		keys[g.key] = true
	}
	if len(keys) != 1 || len(y.requests()) < 2 {
		t.Fatalf("copies: x %d, y %d, keys %v; want several copies, one key", len(x.requests()), len(y.requests()), keys)
	}

	y.stall.Store(true)
	nx, ny := len(x.requests()), len(y.requests())
	if code, _, _ := do(t, "GET", front.URL+"/v1/decisions", ""); code != http.StatusBadGateway {
		t.Fatalf("read on stuck nodes: %d, want 502 after the request timeout", code)
	}
	if dx, dy := len(x.requests())-nx, len(y.requests())-ny; dx+dy != 2 {
		t.Fatalf("a read was sent %d+%d times, want the attempt and one hedge", dx, dy)
	}
}
