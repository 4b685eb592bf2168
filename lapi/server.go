package lapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/profiles"
	"golang.org/x/crypto/bcrypt"
)

// Cluster is the one write path the LAPI uses: submit a command and get its
// result once it is committed and applied locally.
type Cluster interface {
	Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error)
	IsLeader() bool
}

// Config holds the LAPI settings (CrowdSec's api.server section).
type Config struct {
	// TrustedIPs may delete alerts (127.0.0.1 and ::1 always may).
	TrustedIPs []netip.Prefix
	// DisableRemoteRegistration refuses POST /v1/watchers from non-loopback peers.
	DisableRemoteRegistration bool
	// AutoRegistration: token and ranges that auto-validate new machines.
	AutoRegToken  string
	AutoRegRanges []netip.Prefix
	// Retention (db_config.flush).
	FlushMaxItems int
	FlushMaxAge   time.Duration
	FlushEvery    time.Duration
	// AutoDelete: flush.agents_autodelete / bouncers_autodelete (0: off);
	// MetricsMaxAge: flush.metrics_max_age (autodelete.go).
	AutoDelete    fsm.AutoDelete
	MetricsMaxAge time.Duration
	// TouchEvery is how often coalesced last-seen data is written.
	TouchEvery time.Duration
	// MaxBodyBytes bounds request bodies (after gunzip).
	MaxBodyBytes int64
	// BcryptCost for machine passwords (CrowdSec: 10).
	BcryptCost int
	// TokenTTL is a machine token's lifetime (default 1h, CrowdSec's);
	// TokenMaxAge caps a login's tokens, refreshes included (default 2h).
	TokenTTL, TokenMaxAge time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For (or X-Real-IP)
	// names the client; from any other peer the client is the TCP peer.
	TrustedProxies []netip.Prefix
	// Registrations without a valid auto-registration token: a token
	// bucket per source address (RegisterBurst, one more every
	// RegisterEvery), at most MaxUnvalidatedMachines pending at once, and
	// pending machines older than UnvalidatedMachineTTL are deleted by the
	// leader's retention job (0: kept forever).
	RegisterEvery          time.Duration
	RegisterBurst          int
	MaxUnvalidatedMachines int
	UnvalidatedMachineTTL  time.Duration
	// Login backoff: after LoginFreeFailures failed logins from one source
	// address, or for one machine id, each further failure blocks it for
	// LoginBackoffBase·2^k, at most LoginBackoffMax (429 + Retry-After).
	LoginFreeFailures int
	LoginBackoffBase  time.Duration
	LoginBackoffMax   time.Duration
	// StartupEncodings bounds the startup stream encodings running at
	// once (requests beyond it queue for as long as their client waits);
	// 0: GOMAXPROCS.
	StartupEncodings int
	// NodeID names this node in the audit records it writes (audit.go);
	// empty: the host name.
	NodeID string
}

// DefaultConfig returns CrowdSec's defaults.
func DefaultConfig() Config {
	return Config{
		FlushMaxItems: 5000,
		FlushMaxAge:   7 * 24 * time.Hour,
		FlushEvery:    time.Minute,
		MetricsMaxAge: 7 * 24 * time.Hour,
		TouchEvery:    time.Second,
		MaxBodyBytes:  64 << 20,
		BcryptCost:    10,
		TokenTTL:      time.Hour,
		TokenMaxAge:   2 * time.Hour,

		RegisterEvery:          3 * time.Second,
		RegisterBurst:          20,
		MaxUnvalidatedMachines: 1000,
		UnvalidatedMachineTTL:  24 * time.Hour,
		LoginFreeFailures:      10,
		LoginBackoffBase:       time.Second,
		LoginBackoffMax:        30 * time.Second,
	}
}

// limiterEntries bounds each per-source or per-id limiter table.
const limiterEntries = 16384

// Server is the LAPI of one node.
type Server struct {
	cfg     Config
	fsm     *fsm.FSM
	cluster Cluster
	log     *slog.Logger
	metrics *Metrics

	prof    profileState // profilesync.go
	touches *toucher
	now     func() time.Time

	certs     CertVerifier
	keyHashes keyHashes

	regLimit     *rateLimiter
	loginIP      *failBackoff
	loginMachine *failBackoff
	// dummyHash is compared against when a login names no password
	// machine, so that costs what a wrong password costs.
	dummyHash []byte
	// bcryptSlots bounds the bcrypt work of logins and registrations.
	bcryptSlots chan struct{}
	// startups shares startup stream encodings (streamcache.go); scav
	// returns their memory to the OS after a storm (memory.go).
	startups *streamCache
	scav     *scavenger
}

// New builds a server. profs may be nil for the default profiles.
func New(cfg Config, f *fsm.FSM, c Cluster, profs []*profiles.Profile, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{cfg: cfg, fsm: f, cluster: c, log: logger, now: time.Now}
	if err := s.initProfiles(profs); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(f, func() time.Time { return s.now() })
	s.touches = newToucher(s)
	s.regLimit = newRateLimiter(cfg.RegisterEvery, cfg.RegisterBurst, limiterEntries)
	forget := 15 * time.Minute
	s.loginIP = newFailBackoff(cfg.LoginFreeFailures, cfg.LoginBackoffBase, cfg.LoginBackoffMax, forget, limiterEntries)
	s.loginMachine = newFailBackoff(cfg.LoginFreeFailures, cfg.LoginBackoffBase, cfg.LoginBackoffMax, forget, limiterEntries)
	pw := make([]byte, 32)
	_, _ = rand.Read(pw)
	cost := cfg.BcryptCost
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	h, err := bcrypt.GenerateFromPassword(pw, cost)
	if err != nil {
		return nil, err
	}
	s.dummyHash = h
	s.bcryptSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)-1))
	slots := cfg.StartupEncodings
	if slots <= 0 {
		slots = runtime.GOMAXPROCS(0)
	}
	s.startups = newStreamCache(f, func() time.Time { return s.now() }, slots)
	s.scav = newScavenger(s.startups)
	s.metrics.streamCache(s.startups)
	return s, nil
}

// Metrics returns the server's Prometheus collectors.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Run starts the background jobs that run on every node (coalesced
// writes) until ctx ends. The leader-only jobs (EnsureJWTKey, Retention)
// are run by the cluster's leader loop.
func (s *Server) Run(ctx context.Context) {
	go s.touches.run(ctx)
	go s.watchProfiles(ctx.Done())
}

// OnLeadership makes sure the cluster secrets exist (tests; a node runs
// EnsureJWTKey as a leader job).
func (s *Server) OnLeadership(isLeader bool) {
	if !isLeader {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.EnsureJWTKey(ctx); err != nil {
		s.log.Error("cannot store JWT key", "err", err)
	}
}

// EnsureJWTKey (leader job) creates the cluster's JWT signing key if the
// replicated state has none. Done once it exists; an error is retried by
// the caller.
func (s *Server) EnsureJWTKey(ctx context.Context) error {
	if len(s.fsm.JWTKey()) > 0 {
		return nil
	}
	key := make([]byte, 64)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("generate JWT key: %w", err)
	}
	if _, err := s.cluster.Apply(ctx, fsm.Command{Type: fsm.CmdSetJWTKey, Body: fsm.SetJWTKey{Key: key}}); err != nil {
		return fmt.Errorf("store JWT key: %w", err)
	}
	return nil
}

// Retention (leader job) flushes old alerts every FlushEvery until ctx
// ends. A failed flush is logged and tried again on the next tick.
func (s *Server) Retention(ctx context.Context) error {
	if s.cfg.FlushEvery <= 0 {
		return nil
	}
	t := time.NewTicker(s.cfg.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := s.Flush(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("retention flush failed", "err", err)
		}
		if err := s.ExpireUnvalidated(ctx); err != nil {
			s.log.Warn("expiring unvalidated machines failed", "err", err)
		}
		if err := s.AutoDelete(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("auto-deleting machines and bouncers failed", "err", err)
		}
	}
}

// Flush runs the retention job once.
func (s *Server) Flush(ctx context.Context) error {
	_, err := s.apply(ctx, fsm.CmdFlush, fsm.Flush{MaxAge: int64(s.cfg.FlushMaxAge), MaxItems: s.cfg.FlushMaxItems})
	return err
}

// ExpireUnvalidated deletes the password machines that registered more
// than UnvalidatedMachineTTL ago and were never validated.
func (s *Server) ExpireUnvalidated(ctx context.Context) error {
	if s.cfg.UnvalidatedMachineTTL <= 0 {
		return nil
	}
	cutoff := s.now().Add(-s.cfg.UnvalidatedMachineTTL).UnixNano()
	var ids []string
	for _, m := range s.fsm.Machines() {
		if !m.Validated && m.AuthType == fsm.AuthPassword && m.CreatedAt < cutoff {
			ids = append(ids, m.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.apply(ctx, fsm.CmdMachineDelete, fsm.MachineDelete{IDs: ids}); err != nil {
		return err
	}
	s.log.Info("deleted machines never validated", "count", len(ids), "older_than", s.cfg.UnvalidatedMachineTTL)
	return nil
}

// apply submits a command; a command-level error is returned as error.
func (s *Server) apply(ctx context.Context, t fsm.CmdType, body any) (*fsm.Result, error) {
	res, err := s.cluster.Apply(ctx, fsm.Command{Type: t, Body: body})
	if err != nil {
		return nil, err
	}
	if res.Err() != nil {
		return res, res.Err()
	}
	return res, nil
}

// Handler returns the HTTP handler of the public API.
func (s *Server) Handler() http.Handler {
	r := mux.NewRouter()
	r.UseEncodedPath()
	r.StrictSlash(true)
	r.NotFoundHandler = http.HandlerFunc(s.metrics.notFound)
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusMethodNotAllowed) })

	r.HandleFunc("/health", s.health)

	v1 := r.PathPrefix("/v1").Subrouter()
	v1.NotFoundHandler = r.NotFoundHandler
	v1.MethodNotAllowedHandler = r.MethodNotAllowedHandler
	v1.Use(s.gunzip)
	// gorilla/mux answers 404 instead of 405 when a method mismatch is
	// followed by other routes, so each path is registered once and
	// dispatches on the method itself.
	type methods map[string]http.HandlerFunc
	// Paths without variables are also served from a map in front of the
	// router: gorilla/mux's regexp matching was a tenth of a bouncer
	// query's CPU.
	exact := map[string]http.Handler{}
	route := func(path, name string, hs methods) {
		if h, ok := hs[http.MethodGet+","+http.MethodHead]; ok {
			delete(hs, http.MethodGet+","+http.MethodHead)
			hs[http.MethodGet], hs[http.MethodHead] = h, h
		}
		h := s.metrics.instrument(name, func(w http.ResponseWriter, r *http.Request) {
			h, ok := hs[r.Method]
			if !ok {
				w.WriteHeader(http.StatusMethodNotAllowed)
				return
			}
			h(w, r)
		})
		v1.Handle(path, h)
		if !strings.Contains(path, "{") {
			exact["/v1"+path] = s.gunzip(h)
		}
	}
	route("/watchers", "/v1/watchers", methods{"POST": s.registerMachine})
	route("/watchers/login", "/v1/watchers/login", methods{"POST": s.login})
	route("/refresh_token", "/v1/refresh_token", methods{"GET": s.refreshToken})
	route("/watchers/self", "/v1/watchers/self", methods{"DELETE": s.jwt(s.deleteSelf)})
	route("/heartbeat", "/v1/heartbeat", methods{"GET": s.jwt(s.heartbeat)})
	route("/alerts", "/v1/alerts", methods{"POST": s.jwt(s.postAlerts), "GET,HEAD": s.jwt(s.getAlerts),
		"DELETE": s.jwt(s.trusted(s.deleteAlerts))})
	route("/alerts/{alert_id}", "/v1/alerts/:alert_id", methods{"GET,HEAD": s.jwt(s.getAlert),
		"DELETE": s.jwt(s.trusted(s.deleteAlert))})
	route("/decisions", "/v1/decisions", methods{"GET,HEAD": s.bouncer(s.getDecisions), "DELETE": s.jwt(s.deleteDecisions)})
	route("/decisions/stream", "/v1/decisions/stream", methods{"GET,HEAD": s.bouncer(s.stream)})
	route("/decisions/{decision_id}", "/v1/decisions/:decision_id", methods{"DELETE": s.jwt(s.deleteDecision)})
	route("/allowlists", "/v1/allowlists", methods{"GET": s.jwt(s.getAllowlists)})
	route("/allowlists/check", "/v1/allowlists/check", methods{"POST": s.jwt(s.checkAllowlistBulk)})
	route("/allowlists/check/{ip_or_range}", "/v1/allowlists/check/:ip_or_range", methods{"GET,HEAD": s.jwt(s.checkAllowlist)})
	route("/allowlists/{allowlist_name}", "/v1/allowlists/:allowlist_name", methods{"GET": s.jwt(s.getAllowlist)})
	route("/usage-metrics", "/v1/usage-metrics", methods{"POST": s.either(s.usageMetrics)})
	return s.recoverer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if len(s.cfg.TrustedProxies) > 0 {
			req = s.behindProxy(req)
		}
		if h, ok := exact[req.URL.Path]; ok && req.URL.RawPath == "" {
			h.ServeHTTP(w, req)
			return
		}
		r.ServeHTTP(w, req)
	}))
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("Pragma", "no-cache")
	h.Set("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")
	writeJSON(w, http.StatusOK, map[string]string{"status": "up"})
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic in handler", "path", r.URL.Path, "panic", v)
				w.WriteHeader(http.StatusInternalServerError)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// writeJSON writes v as JSON with CrowdSec's content type.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeErr writes {"message": msg}.
func writeErr(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}

// writeApplyErr maps a write failure to an HTTP answer
// (admin.WriteApplyError: no leader → 503 with Retry-After, clients retry
// 503; a command-level failure by its code; anything else 500). Handlers
// whose reference answer differs check the code themselves before
// calling it.
func (s *Server) writeApplyErr(w http.ResponseWriter, err error) {
	admin.WriteApplyError(w, err)
}

// behindProxy makes a request relayed by a trusted proxy carry the
// client's address (from X-Forwarded-For) as its RemoteAddr, so every use
// of clientIP sees the client; requests from other peers are unchanged.
func (s *Server) behindProxy(r *http.Request) *http.Request {
	peer := clientIP(r)
	ip := forwardedIP(peer, r.Header, s.cfg.TrustedProxies)
	if ip == peer {
		return r
	}
	r = r.WithContext(r.Context())
	r.RemoteAddr = net.JoinHostPort(ip, "0")
	return r
}

// writeCmdErr answers a command-level failure (any fsm code) with status
// and its message, and anything else (no leader, timeout) as
// writeApplyErr does.
func (s *Server) writeCmdErr(w http.ResponseWriter, err error, status int) {
	var fe *fsm.Error
	if errors.As(err, &fe) {
		writeErr(w, status, fe.Error())
		return
	}
	s.writeApplyErr(w, err)
}

// clientIP is the TCP peer address (unix socket peers are 127.0.0.1).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || host == "" || host == "@" {
		return "127.0.0.1"
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return host
}
