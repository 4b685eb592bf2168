package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// SocketName is the admin socket's file name inside a node's data dir.
const SocketName = "admin.sock"

// Prefix is the path every admin route lives under.
const Prefix = "/admin/v1"

// Routes adds an owner's routes to the admin router r (the Prefix
// subrouter: paths are relative to /admin/v1).
type Routes func(r *mux.Router)

// Handler is the admin API: the routes of every owner under Prefix, a
// JSON 404 for anything else, and panics answered with 500 (logged on
// logger, which may be nil).
func Handler(logger *slog.Logger, owners ...Routes) http.Handler {
	r := mux.NewRouter()
	r.UseEncodedPath()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		WriteError(w, http.StatusNotFound, "unknown admin route")
	})
	a := r.PathPrefix(Prefix).Subrouter()
	a.Use(unescapeVars)
	for _, add := range owners {
		add(a)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("panic in admin handler", "path", req.URL.Path, "panic", v)
				w.WriteHeader(http.StatusInternalServerError)
			}
		}()
		r.ServeHTTP(w, req)
	})
}

// unescapeVars hands handlers their path variables decoded: the router
// matches the encoded path (a name may hold a '/'), the CLI escapes with
// url.PathEscape, and a name with a space must reach the owner as written.
func unescapeVars(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if vars := mux.Vars(r); len(vars) > 0 {
			dec := make(map[string]string, len(vars))
			for k, v := range vars {
				u, err := url.PathUnescape(v)
				if err != nil {
					WriteError(w, http.StatusBadRequest, fmt.Sprintf("invalid %s %q in the path", k, v))
					return
				}
				dec[k] = u
			}
			r = mux.SetURLVars(r, dec)
		}
		next.ServeHTTP(w, r)
	})
}

// Server serves the admin API on a node's socket.
type Server struct {
	path string
	srv  *http.Server
}

// Listen serves h on DATA/admin.sock (a stale socket of a previous run is
// replaced), readable and writable by the node's user only; a peer that is
// neither root nor that user is refused even if the mode were widened
// (onlyOwner).
func Listen(dataDir string, h http.Handler) (*Server, error) {
	path := filepath.Join(dataDir, SocketName)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	s := &Server{path: path, srv: &http.Server{Handler: onlyOwner(h), ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			uid, ok := peerUID(c)
			return context.WithValue(ctx, peerKey{}, peer{uid: uid, known: ok})
		}}}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// peerKey holds, in a connection's context, who connected (peer).
type peerKey struct{}

type peer struct {
	uid   uint32
	known bool
}

// allowUID is who may use the socket besides what its mode allows: root
// and the node's own user. A variable for the test of the refusal.
var allowUID = func(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

// onlyOwner answers 403 to a peer that is neither root nor the node's
// user (read with SO_PEERCRED where the system has it): should the
// socket's or the data dir's mode ever be widened, the admin API still
// answers only them.
func onlyOwner(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, ok := r.Context().Value(peerKey{}).(peer); ok && p.known && !allowUID(p.uid) {
			WriteError(w, http.StatusForbidden, fmt.Sprintf("the admin socket answers only root and the node's user (uid %d), not uid %d", os.Geteuid(), p.uid))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Shutdown stops accepting, waits (bounded by ctx) for the requests in
// flight, and removes the socket.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	_ = os.Remove(s.path)
	return err
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// WriteError answers {"message": msg} with status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"message": strings.TrimSpace(msg)})
}

// WriteApplyError answers a failed replicated write, on the admin API and
// the LAPI alike: no leader is 503 with Retry-After (clients retry 503),
// a command-level failure answers by its code (not found 404, conflict
// 409, invalid 400, forbidden 403), anything else 500; the message is the
// error's, as it is.
func WriteApplyError(w http.ResponseWriter, err error) {
	msg := func(status int, m string) { WriteJSON(w, status, map[string]string{"message": m}) }
	switch {
	case errors.Is(err, cluster.ErrNotLeader):
		w.Header().Set("Retry-After", "1")
		msg(http.StatusServiceUnavailable, "cluster has no leader, write refused: "+err.Error())
	case errors.Is(err, fsm.ErrNotFound):
		msg(http.StatusNotFound, "object not found")
	default:
		msg(CodeStatus(fsm.CodeOf(err)), err.Error())
	}
}

// CodeStatus is the HTTP status of a command-level failure code. Only the
// code is ever looked at, never the message.
func CodeStatus(c fsm.Code) int {
	switch c {
	case fsm.CodeNotFound:
		return http.StatusNotFound
	case fsm.CodeConflict:
		return http.StatusConflict
	case fsm.CodeInvalid:
		return http.StatusBadRequest
	case fsm.CodeForbidden:
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// DurationParam reads the query parameter name as a positive Go duration
// (def when absent); the error names it as the CLI flag of the same name.
func DurationParam(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid --%s %q", name, v)
	}
	return d, nil
}
