package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
)

// The web console's in-process admin handler serves the owners' routes
// but not the runtime's profiles; the socket's serves both.
func TestDebugRoutesOnTheSocketOnly(t *testing.T) {
	owner := func(r *mux.Router) {
		r.HandleFunc("/ping", func(w http.ResponseWriter, _ *http.Request) { admin.WriteJSON(w, http.StatusOK, "pong") })
	}
	routes := []admin.Routes{owner}
	console, socket := adminHandlers(nil, nil, routes)
	if len(routes) != 1 {
		t.Fatalf("adminHandlers changed the shared route list: %d routes", len(routes))
	}
	get := func(h http.Handler, path string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code
	}
	for name, h := range map[string]http.Handler{"console": console, "socket": socket} {
		if c := get(h, "/admin/v1/ping"); c != http.StatusOK {
			t.Errorf("%s: ping %d", name, c)
		}
	}
	for _, p := range append([]string{"profile?seconds=1", "trace?seconds=1"}, admin.DebugProfiles...) {
		if c := get(console, "/admin/v1/debug/pprof/"+p); c != http.StatusNotFound {
			t.Errorf("console serves debug/pprof/%s: %d", p, c)
		}
	}
	if c := get(socket, "/admin/v1/debug/pprof/goroutine?debug=1"); c != http.StatusOK {
		t.Errorf("socket: goroutine %d", c)
	}
}

// Argument errors are one line and a non-zero exit, before the node is
// asked.
func TestDebugCommandArgs(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"debug", "profile", "--seconds", "0"}, "--seconds must be between 1 and 120"},
		{[]string{"debug", "trace", "--seconds", "121"}, "--seconds must be between 1 and 120"},
		{[]string{"debug", "heap", "--out", ""}, "--out must name a file"},
		{[]string{"debug", "goroutines"}, "no running halapi node"},
		{[]string{"debug", "heap", "--seconds", "3"}, "unknown flag: --seconds"},
	} {
		_, errs, err := run(t, append(c.args, "--data-dir", dir)...)
		if err == nil || !strings.Contains(errs, c.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
			t.Errorf("%v: err=%v stderr=%q, want %q on one line", c.args, err, errs, c.want)
		}
	}
	help := mustRun(t, "debug", "profile", "--help")
	for _, want := range []string{"--out FILE", "--seconds N", "--data-dir DIR"} {
		if !strings.Contains(help, want) {
			t.Errorf("debug profile --help lacks %q:\n%s", want, help)
		}
	}
}

// Against a running node: a CPU profile, a trace, a heap profile to
// files, a goroutine dump to stdout; the node's TCP listeners serve no
// /debug/pprof.
func TestDebugCommands(t *testing.T) {
	metrics := freeAddr(t)
	dir, addr := startNode(t, "--metrics-listen", metrics)
	out := t.TempDir()
	gz := func(name string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s is not gzip: %v", name, err)
		}
		if raw, err := io.ReadAll(zr); err != nil || len(raw) == 0 {
			t.Fatalf("%s: %d bytes %v", name, len(raw), err)
		}
		if st, _ := os.Stat(filepath.Join(out, name)); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", name, st.Mode())
		}
	}
	mustRun(t, "debug", "profile", "--seconds", "1", "--out", filepath.Join(out, "cpu.pprof"), "--data-dir", dir)
	gz("cpu.pprof")
	mustRun(t, "debug", "heap", "--out", filepath.Join(out, "heap.pprof"), "--data-dir", dir)
	gz("heap.pprof")
	mustRun(t, "debug", "trace", "--seconds", "1", "--out", filepath.Join(out, "t.trace"), "--data-dir", dir)
	if b, err := os.ReadFile(filepath.Join(out, "t.trace")); err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Fatalf("trace: %v %q", err, b[:min(len(b), 16)])
	}
	if g := mustRun(t, "debug", "goroutines", "--data-dir", dir); !strings.Contains(g, "goroutine ") || !strings.Contains(g, "github.com/halapi/halapi/") {
		t.Fatalf("goroutines:\n%.500s", g)
	}
	if left, _ := filepath.Glob(filepath.Join(out, "*.tmp")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	for _, base := range []string{"http://" + addr, "http://" + metrics} {
		for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=1", "/debug/requests"} {
			resp, err := http.Get(base + p)
			if err != nil {
				t.Fatalf("%s%s: %v", base, p, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || bytes.Contains(b, []byte("goroutine")) {
				t.Errorf("%s%s is served: %d %.200s", base, p, resp.StatusCode, b)
			}
		}
	}
}
