package admin

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// debugClient serves DebugRoutes on a socket (audited, as the node's is)
// and returns a client and the audit records written.
func debugClient(t *testing.T) (*Client, func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	audit := func(context.Context, string, string, string, string) error {
		mu.Lock()
		n++
		mu.Unlock()
		return nil
	}
	dir := shortDir(t)
	srv, err := Listen(dir, HandlerWithAudit(nil, audit, DebugRoutes))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	c, err := NewClient(dir)
	if err != nil {
		t.Fatal(err)
	}
	return c, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// gunzipped checks b is gzip and returns it decompressed.
func gunzipped(t *testing.T, what string, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s is not gzip (%d bytes): %v", what, len(b), err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil || len(raw) == 0 {
		t.Fatalf("%s: %d bytes, %v", what, len(raw), err)
	}
	return raw
}

// A CPU profile, a trace and the named profiles come through the socket
// as go tool pprof / go tool trace read them; none is audited (GETs).
func TestDebugRoutesServeProfiles(t *testing.T) {
	c, audited := debugClient(t)
	get := func(path string) []byte {
		t.Helper()
		var b bytes.Buffer
		if err := c.Download(path, &b); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return b.Bytes()
	}
	gunzipped(t, "CPU profile", get("/debug/pprof/profile?seconds=1"))
	if tr := get("/debug/pprof/trace?seconds=1"); !bytes.HasPrefix(tr, []byte("go 1.")) || len(tr) < 64 {
		t.Fatalf("trace: %d bytes, starts %q", len(tr), tr[:min(len(tr), 16)])
	}
	for _, name := range DebugProfiles {
		gunzipped(t, name, get("/debug/pprof/"+name))
	}
	gunzipped(t, "heap after a GC", get("/debug/pprof/heap?gc=1"))
	if g := string(get("/debug/pprof/goroutine?debug=2")); !strings.Contains(g, "goroutine ") || !strings.Contains(g, "[running]") {
		t.Fatalf("goroutine dump:\n%.500s", g)
	}
	if h := string(get("/debug/pprof/heap?debug=1")); !strings.Contains(h, "heap profile:") {
		t.Fatalf("heap text:\n%.500s", h)
	}
	if n := audited(); n != 0 {
		t.Fatalf("%d debug reads audited", n)
	}
}

// seconds out of bounds or not a whole number, and a bad debug level,
// are 400 with a message; nothing is captured.
func TestDebugRoutesRefuseBadParams(t *testing.T) {
	h := Handler(nil, DebugRoutes)
	for _, path := range []string{
		"/admin/v1/debug/pprof/profile?seconds=0", "/admin/v1/debug/pprof/profile?seconds=121",
		"/admin/v1/debug/pprof/profile?seconds=1.5", "/admin/v1/debug/pprof/trace?seconds=-1",
		"/admin/v1/debug/pprof/trace?seconds=abc", "/admin/v1/debug/pprof/heap?debug=3",
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != http.StatusBadRequest || !strings.HasPrefix(w.Body.String(), `{"message":"invalid `) ||
			w.Header().Get("Content-Type") != "application/json; charset=utf-8" {
			t.Errorf("%s: %d %s", path, w.Code, w.Body)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/admin/v1/debug/pprof/cmdline", nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("cmdline: %d %s", w.Code, w.Body)
	}
}

// One CPU profile or trace at a time: while a profile runs, a second one
// and a trace get 409 with a message; once it ended, a new one runs.
func TestDebugRoutesOneCaptureAtATime(t *testing.T) {
	c, _ := debugClient(t)
	done := make(chan error, 1)
	var first bytes.Buffer
	go func() { done <- c.Download("/debug/pprof/profile?seconds=2", &first) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		capture.Lock()
		running := capture.kind != ""
		capture.Unlock()
		if running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first profile never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, path := range []string{"/debug/pprof/profile?seconds=1", "/debug/pprof/trace?seconds=1"} {
		err := c.Download(path, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "a CPU profile is already being taken on this node") {
			t.Fatalf("%s during a profile: %v", path, err)
		}
	}
	// named profiles are not captures: they still answer
	if err := c.Download("/debug/pprof/goroutine?debug=1", io.Discard); err != nil {
		t.Fatalf("goroutine during a profile: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	gunzipped(t, "first profile", first.Bytes())
	var b bytes.Buffer
	if err := c.Download("/debug/pprof/trace?seconds=1", &b); err != nil || !bytes.HasPrefix(b.Bytes(), []byte("go 1.")) {
		t.Fatalf("trace after the profile: %v (%d bytes)", err, b.Len())
	}
}
