package agent

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// remoteAddrs wraps b's handler to note the client address of every
// request but the health checks (which have their own connections).
func remoteAddrs(t *testing.T, b *backend) func() int {
	var mu sync.Mutex
	seen := map[string]bool{}
	b.srv.Close()
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			mu.Lock()
			seen[r.RemoteAddr] = true
			mu.Unlock()
		}
		b.serve(w, r)
	}))
	t.Cleanup(b.srv.Close)
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}
}

// The hot path keeps one upstream connection for a keep-alive client, and
// sends the request as the client sent it (method, path, query, headers,
// body), with a key on writes.
func TestRelayReusesOneConnection(t *testing.T) {
	x := newBackend(t, "x")
	conns := remoteAddrs(t, x)
	a, front := startAgent(t, Config{}, x)
	waitUntil(t, "a preferred node", func() bool { return a.Preferred() != "" })
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	for i := range 20 {
		req, _ := http.NewRequest("GET", front.URL+"/v1/decisions?ip=10.0.0.1&x=%2F", nil)
		req.Header.Set("X-Api-Key", "k")
		req.Header.Add("X-Multi", "a")
		req.Header.Add("X-Multi", "b")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"x"`) || resp.Header.Get("X-Node") != "x" {
			t.Fatalf("request %d: %d %s %v", i, resp.StatusCode, b, resp.Header)
		}
	}
	if got := conns(); got != 1 {
		t.Fatalf("20 keep-alive requests opened %d upstream connections, want 1", got)
	}
	code, _, _ := do(t, "POST", front.URL+"/v1/alerts", `[{"scenario":"a"}]`, "Authorization", "Bearer t")
	if code != 200 {
		t.Fatalf("POST: %d", code)
	}
	got := x.requests()
	if len(got) != 21 || got[0].apiKey != "k" || got[0].key != "" {
		t.Fatalf("node got %d requests, first %+v", len(got), got[0])
	}
	if w := got[20]; w.method != "POST" || string(w.body) != `[{"scenario":"a"}]` || !strings.HasPrefix(w.key, "agent-") {
		t.Fatalf("write arrived as %+v", w)
	}
	if st := a.Status(); st.Retries != 0 || st.Nodes[0].Errors != 0 {
		t.Fatalf("retries %d, errors %d, want none", st.Retries, st.Nodes[0].Errors)
	}
}

// A kept-alive connection the node closed while idle is replaced by a
// fresh one on the same node: no error, no retry elsewhere, the node is
// not marked down.
func TestRelayReplacesConnectionClosedByNode(t *testing.T) {
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, front := startAgent(t, Config{}, x, y)
	preferOnly(t, a, x, y)
	before := a.Status() // preferOnly may have moved the agent off y already
	for i := range 5 {
		code, body, _ := do(t, "GET", front.URL+"/v1/decisions?ip=10.0.0.1", "", "X-Api-Key", "k")
		if code != 200 || !strings.Contains(body, `"x"`) {
			t.Fatalf("request %d: %d %s, want node x", i, code, body)
		}
		// the node drops every connection (its idle timeout, a restart
		// of its listener's connections): the agent's pooled one is dead
		x.srv.CloseClientConnections()
	}
	st := a.Status()
	if st.Preferred != x.srv.URL || st.Failovers != before.Failovers || st.Retries != before.Retries {
		t.Fatalf("status: preferred %s, %d failovers, %d retries; want x, none", st.Preferred, st.Failovers-before.Failovers, st.Retries-before.Retries)
	}
	if got := y.requests(); len(got) != 0 {
		t.Fatalf("node y got %d requests, want none", len(got))
	}
}

// HEAD answers have no body; chunked answers are passed on whole.
func TestRelayHeadAndChunked(t *testing.T) {
	big := strings.Repeat("0123456789", 10000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			return
		}
		w.Header().Set("X-Method", r.Method)
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", "12345")
			return
		}
		for i := 0; i < len(big); i += 7000 {
			_, _ = io.WriteString(w, big[i:min(i+7000, len(big))])
			w.(http.Flusher).Flush() // chunked
		}
	}))
	defer srv.Close()
	a, err := New(Config{Servers: []string{srv.URL}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	stop := runAgent(t, a)
	defer stop()
	front := httptest.NewServer(a.Handler())
	defer front.Close()
	for range 3 {
		code, body, h := do(t, "GET", front.URL+"/v1/decisions/stream", "")
		if code != 200 || body != big || h.Get("X-Method") != "GET" {
			t.Fatalf("GET: %d, %d bytes (want %d)", code, len(body), len(big))
		}
		code, body, h = do(t, "HEAD", front.URL+"/v1/decisions/stream", "")
		if code != 200 || body != "" || h.Get("X-Method") != "HEAD" {
			t.Fatalf("HEAD: %d %q %v", code, body, h)
		}
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runAgent runs a until the returned stop is called, and waits for a
// preferred node.
func runAgent(t *testing.T, a *Agent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	waitUntil(t, "a preferred node", func() bool { return a.Preferred() != "" })
	return func() { cancel(); <-done }
}

// A client that gives up while its request waits on a stuck node: the
// agent cuts its upstream connection at once (the node's handler sees its
// request cancelled) instead of waiting for the node.
func TestRelayClientGoneCutsUpstream(t *testing.T) {
	x := newBackend(t, "x")
	cut := make(chan time.Time, 1)
	x.srv.Close() // replaced by one whose query route waits for its request's end
	inner := http.HandlerFunc(x.serve)
	x.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/decisions" {
			<-r.Context().Done()
			cut <- time.Now()
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(x.srv.Close)
	a, front := startAgent(t, Config{HedgeAfter: 10 * time.Second}, x)
	waitUntil(t, "a preferred node", func() bool { return a.Preferred() != "" })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/v1/decisions?ip=10.0.0.1", nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("got %s from a stuck node", resp.Status)
	}
	gone := time.Now()
	select {
	case at := <-cut:
		if d := at.Sub(gone); d > time.Second {
			t.Fatalf("the node's request ended %v after the client left", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the node's request was not cancelled after the client left")
	}
	if st := a.Status(); st.Preferred != x.srv.URL || st.Failovers != 0 {
		t.Fatalf("a client leaving moved the agent off its node: %+v", st)
	}
}
