//go:build unix

package agent

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// socketClient is what crowdsec's apiclient builds for a LAPI URL that
// is a path: an http.Transport dialing the socket, host "unix".
func socketClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}}}
}

// shortDir is a temporary directory whose paths fit a socket address
// (t.TempDir() can be too long).
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "ags")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// The socket is 0660 whatever the umask, relays requests with the same
// failover as the TCP listener, and is removed when the listener closes.
func TestSocketListenerRelaysAndFailsOver(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(shortDir(t), "agent.sock")
	x, y := newBackend(t, "x"), newBackend(t, "y")
	a, _ := startAgent(t, Config{}, x, y)
	preferOnly(t, a, x, y)
	ln, err := ListenSocket(path, strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: a.Handler()}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSocket == 0 || fi.Mode().Perm() != SocketMode {
		t.Fatalf("socket mode %v, want a socket with %v", fi.Mode(), SocketMode)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != os.Getgid() {
		t.Fatalf("socket group %d, want %d", st.Gid, os.Getgid())
	}

	c := socketClient(path)
	get := func() (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://unix/v1/decisions?ip=1.2.3.4", nil)
		req.Header.Set("X-Api-Key", "k")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET over the socket: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || !strings.Contains(body, `"x"`) {
		t.Fatalf("over the socket: %d %s, want node x", code, body)
	}
	before := a.Status().Failovers // the agent may have started on y, then moved to x
	x.kill()
	if code, body := get(); code != 200 || !strings.Contains(body, `"y"`) {
		t.Fatalf("after the kill: %d %s, want node y", code, body)
	}
	// a write carries its key over the socket too
	req, _ := http.NewRequest(http.MethodPost, "http://unix/v1/alerts", strings.NewReader(`[{}]`))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := y.requests()
	if last := got[len(got)-1]; last.method != "POST" || len(last.key) < 16 || last.apiKey != "" || string(last.body) != `[{}]` {
		t.Fatalf("node y got %+v, want the POST with its body and an Idempotency-Key", last)
	}
	if st := a.Status(); st.Failovers-before != 1 || st.Preferred != y.srv.URL {
		t.Fatalf("%d failovers since the kill, preferred %s; want 1, node y", st.Failovers-before, st.Preferred)
	}

	c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	<-done
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file after shutdown: %v, want it removed", err)
	}
}

// A stale socket (nobody listens) is replaced; a live one, a file that is
// not a socket, a relative or too long path and an unknown group are
// refused, and nothing in the way is removed.
func TestSocketListenerRefusals(t *testing.T) {
	dir := shortDir(t)
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close() // the file stays, nobody listens: what a killed agent leaves
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("the stale socket is not there: %v", err)
	}
	ln, err := ListenSocket(stale, "")
	if err != nil {
		t.Fatalf("stale socket: %v, want it replaced", err)
	}

	// live: the first listener keeps answering
	if _, err := ListenSocket(stale, ""); err == nil || !strings.Contains(err.Error(), "another process listens") {
		t.Fatalf("live socket: %v, want refused", err)
	}
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	if c, err := net.DialTimeout("unix", stale, time.Second); err != nil {
		t.Fatalf("the live socket was disturbed: %v", err)
	} else {
		c.Close()
	}
	ln.Close()

	regular := filepath.Join(dir, "file")
	if err := os.WriteFile(regular, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenSocket(regular, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v, want refused", err)
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "keep" {
		t.Fatalf("the regular file was touched: %q %v", b, err)
	}
	for _, c := range []struct{ path, group, want string }{
		{"agent.sock", "", "must be absolute"},
		{"/" + strings.Repeat("x", 120), "", "longer than"},
		{filepath.Join(dir, "g.sock"), "no-such-group-halapi", "socket group"},
		{filepath.Join(dir, "missing", "a.sock"), "", "no such file"},
	} {
		if _, err := ListenSocket(c.path, c.group); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ListenSocket(%q, %q): %v, want %q", c.path, c.group, err, c.want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "g.sock")); !os.IsNotExist(err) {
		t.Fatalf("a refused group left a socket: %v", err)
	}
}

// Agents started at once on the same stale socket: exactly one gets it,
// the others find it live, and the file is the winner's (without the
// directory lock two could both take it for stale, and the second remove
// the first's fresh socket).
func TestSocketListenerStartRace(t *testing.T) {
	dir := shortDir(t)
	for round := range 20 {
		path := filepath.Join(dir, fmt.Sprintf("r%d.sock", round))
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		const n = 6
		lns := make(chan net.Listener, n)
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ln, err := ListenSocket(path, "")
				if err != nil {
					errs <- err
					return
				}
				lns <- ln
			}()
		}
		wg.Wait()
		close(lns)
		close(errs)
		var won []net.Listener
		for ln := range lns {
			won = append(won, ln)
		}
		for err := range errs {
			if !strings.Contains(err.Error(), "another process listens") {
				t.Errorf("round %d: %v, want the socket found live", round, err)
			}
		}
		if len(won) != 1 {
			t.Fatalf("round %d: %d agents got the socket, want 1", round, len(won))
		}
		go func() {
			if c, err := won[0].Accept(); err == nil {
				c.Close()
			}
		}()
		c, err := net.DialTimeout("unix", path, time.Second)
		if err != nil {
			t.Fatalf("round %d: the winner's socket does not answer: %v", round, err)
		}
		c.Close()
		won[0].Close()
	}
}
