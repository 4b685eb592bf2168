package admin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// shortDir is a data dir whose socket path fits sun_path (108 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "adm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// The socket end to end: owner-only mode, a stale socket replaced, every
// owner's routes under the prefix, the error shape through the client
// (one line, the server's message), a JSON 404 for unknown routes, a
// panicking handler answered 500 without killing the server, the socket
// removed on shutdown.
func TestSocketRoutesAndClient(t *testing.T) {
	dir := shortDir(t)
	if err := os.WriteFile(filepath.Join(dir, SocketName), nil, 0o600); err != nil { // stale
		t.Fatal(err)
	}
	owner1 := func(r *mux.Router) {
		r.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
			WriteJSON(w, http.StatusOK, map[string]string{"q": r.URL.Query().Get("q")})
		}).Methods(http.MethodGet)
		r.HandleFunc("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	}
	owner2 := func(r *mux.Router) {
		r.HandleFunc("/refuse", func(w http.ResponseWriter, _ *http.Request) {
			WriteError(w, http.StatusConflict, "  no such thing\n")
		}).Methods(http.MethodPost)
	}
	srv, err := Listen(dir, Handler(nil, owner1, owner2))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(srv.Path())
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v mode %v", err, fi.Mode())
	}
	c, err := NewClient(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]string
	if err := c.Do("GET", "/echo", map[string][]string{"q": {"a b"}}, nil, &out); err != nil || out["q"] != "a b" {
		t.Fatalf("echo: %v %v", err, out)
	}
	if err := c.Do("POST", "/refuse", nil, map[string]int{"x": 1}, nil); err == nil || err.Error() != "no such thing" {
		t.Fatalf("refuse: %v", err)
	}
	if err := c.Do("GET", "/nope", nil, nil, nil); err == nil || err.Error() != "unknown admin route" {
		t.Fatalf("unknown route: %v", err)
	}
	if err := c.Do("GET", "/boom", nil, nil, nil); err == nil || err.Error() != "admin API answered 500 Internal Server Error" {
		t.Fatalf("panic: %v", err)
	}
	var buf bytes.Buffer
	if err := c.Download("/echo?q=x", &buf); err != nil || !strings.Contains(buf.String(), `"q":"x"`) {
		t.Fatalf("download: %v %q", err, buf.String())
	}
	if err := c.Download("/nope", &buf); err == nil || err.Error() != "unknown admin route" {
		t.Fatalf("download error: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := NewClient(dir); err == nil || !strings.Contains(err.Error(), "no running halapi node found in "+dir) {
		t.Fatalf("after shutdown: %v", err)
	}
}

func TestWriteApplyError(t *testing.T) {
	for _, c := range []struct {
		err    error
		status int
		msg    string
		retry  bool
	}{
		{fmt.Errorf("remove: %w", cluster.ErrNotLeader), 503, "cluster has no leader, write refused: remove: " + cluster.ErrNotLeader.Error(), true},
		{fsm.ErrNotFound, 404, "object not found", false},
		{&fsm.Error{Code: fsm.CodeConflict, Message: "taken"}, 409, "taken", false},
		{&fsm.Error{Code: fsm.CodeInvalid, Message: "bad"}, 400, "bad", false},
		{errors.New("disk on fire"), 500, "disk on fire", false},
	} {
		w := httptest.NewRecorder()
		WriteApplyError(w, c.err)
		b, _ := io.ReadAll(w.Body)
		want := fmt.Sprintf(`{"message":%q}`, c.msg)
		if w.Code != c.status || string(b) != want || (w.Header().Get("Retry-After") == "1") != c.retry {
			t.Errorf("%v: %d %s (Retry-After %q), want %d %s", c.err, w.Code, b, w.Header().Get("Retry-After"), c.status, want)
		}
	}
}

type fakeCluster struct{ backupErr error }

func (fakeCluster) Status(context.Context) cluster.Status {
	return cluster.Status{NodeID: "n1", Leader: "n1"}
}
func (fakeCluster) Snapshot() error { return errors.New("no space") }
func (f fakeCluster) WriteBackup(_ context.Context, w io.Writer, version string) (cluster.BackupMeta, error) {
	if f.backupErr != nil {
		return cluster.BackupMeta{}, f.backupErr
	}
	_, err := w.Write([]byte("archive of " + version))
	return cluster.BackupMeta{}, err
}

// The cluster's routes: status, snapshot errors, removal errors mapped,
// a backup that fails before its first byte is an error, not a 200.
func TestClusterRoutes(t *testing.T) {
	removed := ""
	remove := func(_ context.Context, id string) error {
		if id == "n9" {
			return cluster.ErrNotLeader
		}
		removed = id
		return nil
	}
	call := func(c fakeCluster, method, path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		Handler(nil, ClusterRoutes(c, remove, "v9")).ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w
	}
	if w := call(fakeCluster{}, "GET", "/admin/v1/status"); w.Code != 200 || !strings.Contains(w.Body.String(), `"node_id":"n1"`) {
		t.Fatalf("status %d %s", w.Code, w.Body)
	}
	if w := call(fakeCluster{}, "POST", "/admin/v1/snapshot"); w.Code != 500 || w.Body.String() != `{"message":"snapshot: no space"}` {
		t.Fatalf("snapshot %d %s", w.Code, w.Body)
	}
	if w := call(fakeCluster{}, "DELETE", "/admin/v1/members/n%2F2%20b"); w.Code != 204 || removed != "n/2 b" {
		t.Fatalf("remove %d %q", w.Code, removed)
	}
	if w := call(fakeCluster{}, "DELETE", "/admin/v1/members/n2"); w.Code != 204 || removed != "n2" {
		t.Fatalf("remove %d %q", w.Code, removed)
	}
	if w := call(fakeCluster{}, "DELETE", "/admin/v1/members/n9"); w.Code != 503 {
		t.Fatalf("remove without leader %d", w.Code)
	}
	if w := call(fakeCluster{}, "GET", "/admin/v1/backup"); w.Code != 200 || w.Body.String() != "archive of v9" ||
		w.Header().Get("Content-Type") != "application/gzip" {
		t.Fatalf("backup %d %q", w.Code, w.Body)
	}
	if w := call(fakeCluster{backupErr: errors.New("closed")}, "GET", "/admin/v1/backup"); w.Code != 500 ||
		w.Body.String() != `{"message":"backup: closed"}` {
		t.Fatalf("failed backup %d %q", w.Code, w.Body)
	}
}

// The socket reads who connects: a peer the policy does not allow gets a
// 403 with a message, whatever the socket's mode; root and the node's own
// user are allowed.
func TestSocketRefusesOtherUsers(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("peer credentials are read on linux only")
	}
	if !allowUID(0) || !allowUID(uint32(os.Geteuid())) || (os.Geteuid() != 12345 && allowUID(12345)) {
		t.Fatal("default policy: root and the node's user only")
	}
	dir := shortDir(t)
	srv, err := Listen(dir, Handler(nil, func(r *mux.Router) {
		r.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, http.StatusOK, "ok") })
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()
	c, err := NewClient(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do("GET", "/ok", nil, nil, nil); err != nil {
		t.Fatalf("own user refused: %v", err)
	}
	me := uint32(os.Geteuid())
	saved := allowUID
	allowUID = func(uid uint32) bool { return uid != me }
	defer func() { allowUID = saved }()
	err = c.Do("GET", "/ok", nil, nil, nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("not uid %d", me)) {
		t.Fatalf("refused peer: %v", err)
	}
}
