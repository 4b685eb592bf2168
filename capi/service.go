package capi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/halapi/halapi/fsm"
)

// Applier is the cluster's write path (cluster.Node satisfies it).
type Applier interface {
	Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error)
	IsLeader() bool
}

// errNotLeader stops a loop whose node lost leadership before its
// context was cancelled.
var errNotLeader = errors.New("capi: this node is no longer the raft leader")

// Service runs the CAPI loops on the raft leader.
type Service struct {
	cfg     Config
	f       *fsm.FSM
	c       Applier
	log     *slog.Logger
	metrics *collector
	started time.Time

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	running bool
	closed  bool
	client  *Client
	kick    chan struct{}
	mem     memStatus
}

// memStatus is what the leader keeps in memory (not replicated).
type memStatus struct {
	since       time.Time
	state       string
	lastPull    time.Time
	lastPush    time.Time
	lastMetrics time.Time
	lastUsage   time.Time
	lastError   string
	lastErrorAt time.Time
	errorCount  int64
	streak      int
	streakStart time.Time
}

// New builds the service. Nothing runs until OnLeadership(true).
func New(cfg Config, f *fsm.FSM, c Applier, logger *slog.Logger) *Service {
	cfg.fill()
	if logger == nil {
		logger = slog.Default()
	}
	s := &Service{cfg: cfg, f: f, c: c, log: logger.With("component", "capi"), started: cfg.Now(),
		kick: make(chan struct{}, 1)}
	s.metrics = newCollector(s)
	return s
}

// OnLeadership starts the loops when this node becomes the leader and
// cancels them (with their in-flight calls) at once when it stops being
// one. It never blocks.
func (s *Service) OnLeadership(isLeader bool) {
	if s.cfg.Disabled {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if !isLeader {
		if s.cancel != nil {
			s.cancel()
			s.cancel = nil
			s.log.Info("leadership lost: CAPI sync stopped on this node")
		}
		return
	}
	if s.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	prev := s.done
	done := make(chan struct{})
	s.cancel, s.done = cancel, done
	go func() {
		defer close(done)
		if prev != nil {
			<-prev // the previous term's loops have returned
		}
		s.run(ctx)
	}()
}

// RunLeader is the CAPI sync as a cluster leader job: the loops run until
// ctx ends (leadership lost), and are cancelled then.
func (s *Service) RunLeader(ctx context.Context) error {
	s.OnLeadership(true)
	<-ctx.Done()
	s.OnLeadership(false)
	return nil
}

// Close stops the loops for good and waits (bounded) for them to return.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	done := s.done
	s.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	}
}

// Running reports whether the loops run on this node.
func (s *Service) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

func (s *Service) setState(st string) {
	s.mu.Lock()
	s.mem.state = st
	s.mu.Unlock()
}

func (s *Service) run(ctx context.Context) {
	s.mu.Lock()
	s.running = true
	s.mem = memStatus{since: s.cfg.Now(), state: "starting"}
	s.mu.Unlock()
	s.metrics.leader.Set(1)
	defer func() {
		s.mu.Lock()
		s.running, s.client = false, nil
		s.mem.state = "stopped"
		s.mu.Unlock()
		s.metrics.leader.Set(0)
		s.metrics.streak.Set(0)
	}()
	s.log.Info("this node leads: starting CAPI sync")
	for ctx.Err() == nil {
		creds, ok := s.credentials(ctx)
		if !ok {
			return
		}
		s.runWith(ctx, creds)
	}
}

// runWith runs the loops with one set of credentials until ctx ends or
// the stored credentials change.
func (s *Service) runWith(parent context.Context, creds Credentials) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	if s.cfg.OverrideURL {
		creds.URL = s.cfg.URL
	}
	cl, err := NewClient(&s.cfg, creds)
	if err != nil {
		s.noteErr("config", err)
		_ = sleepCtx(parent, s.cfg.RetryMax)
		return
	}
	cl.Scenarios = s.scenarios
	cl.Observe = s.metrics.observe
	cl.OnToken = func(tok string) {
		// bounded: a new leader reuses the token if it got stored
		sctx, c := context.WithTimeout(ctx, 10*time.Second)
		defer c()
		if err := s.setConfig(sctx, KeyToken, []byte(tok)); err != nil {
			s.log.Warn("cannot store the CAPI token", "err", err)
		}
	}
	if tok := s.f.Config(KeyToken); tok != nil {
		if cl.SetToken(string(tok)) {
			s.log.Info("reusing the stored CAPI token", "login", creds.Login)
		} else {
			s.log.Info("stored CAPI token expired or expiring: logging in", "login", creds.Login)
		}
	}
	s.mu.Lock()
	s.client = cl
	s.mem.state = "running"
	s.mu.Unlock()

	loops := []func(context.Context, *Client){s.pushLoop, s.pullLoop, s.metricsLoop}
	if !s.cfg.DisableUsageMetrics {
		loops = append(loops, s.usageMetricsLoop)
	}
	var wg sync.WaitGroup
	for _, l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l(ctx, cl)
		}()
	}
	// watch: credential changes (registration forced elsewhere) restart
	// the loops with the new ones.
	fp := fingerprint(creds)
	t := time.NewTicker(s.cfg.WatchInterval)
	notLeader, regFails := 0, 0
	var regNext time.Time
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-s.kick:
		}
		if ctx.Err() != nil {
			break
		}
		if s.leaderGone(&notLeader) {
			break
		}
		// a forced registration runs beside the loops, which keep the
		// current credentials until CAPI accepted the new ones
		if req, ok := s.registerRequested(); ok && req.Force && !s.cfg.Now().Before(regNext) {
			if err := s.register(ctx, req); err != nil {
				regFails++
				regNext = s.cfg.Now().Add(backoff(&s.cfg, regFails))
			}
		} else if ok && !req.Force {
			s.clearRegisterRequest(ctx) // already registered: nothing to do
		}
		s.serveEnrollment(ctx, cl)
		if sc := readCredentials(s.f); sc == nil || fingerprint(withURL(sc.Credentials, creds.URL, s.cfg.OverrideURL)) != fp {
			s.log.Info("CAPI credentials changed: restarting CAPI sync")
			cancel()
		}
	}
	t.Stop()
	wg.Wait()
}

func withURL(c Credentials, u string, override bool) Credentials {
	if override {
		c.URL = u
	}
	return c
}

// leaderGone is a safety net for a node whose raft stopped (closing)
// without a leadership notification: after two checks that find it not
// leading, the loops are stopped.
func (s *Service) leaderGone(count *int) bool {
	if s.c.IsLeader() {
		*count = 0
		return false
	}
	if *count++; *count < 2 {
		return false
	}
	s.log.Warn("this node is no longer the raft leader: stopping CAPI sync")
	s.OnLeadership(false)
	return true
}

// credentials returns usable credentials: imported from the configured
// file, stored, or registered (when asked on the command line or through
// the admin API). It waits, watching the replicated state, while there
// are none; false when ctx ended or leadership is gone.
func (s *Service) credentials(ctx context.Context) (Credentials, bool) {
	told := false
	fails, notLeader := 0, 0
	for {
		if ctx.Err() != nil || s.leaderGone(&notLeader) {
			return Credentials{}, false
		}
		err := s.importCredentials(ctx)
		sc := readCredentials(s.f)
		req, requested := s.registerRequested()
		switch {
		case err != nil:
		case requested && (sc == nil || req.Force):
			s.setState("registering")
			if err = s.register(ctx, req); err == nil {
				continue
			}
		case sc != nil:
			if requested {
				s.clearRegisterRequest(ctx) // already registered
			}
			return sc.Credentials, true
		case s.cfg.Register:
			s.setState("registering")
			if err = s.register(ctx, registerRequest{At: s.cfg.Now().UnixNano()}); err == nil {
				continue
			}
		default:
			s.setState("no credentials")
			if !told {
				s.log.Warn("no CAPI credentials: push and pull to the Central API are disabled " +
					"(give --capi-credentials, --capi-register, or run `halapi capi register`)")
				told = true
			}
		}
		wait := s.cfg.WatchInterval
		if err != nil {
			fails++
			wait = backoff(&s.cfg, fails)
		}
		select {
		case <-ctx.Done():
			return Credentials{}, false
		case <-time.After(wait):
		case <-s.kick:
		}
	}
}

// importCredentials stores the configured credentials file once per
// content (tracked in the replicated state).
func (s *Service) importCredentials(ctx context.Context) error {
	c := s.cfg.Credentials
	if c == nil {
		return nil
	}
	fp := fingerprint(*c)
	if string(s.f.Config(KeyImported)) == fp {
		return nil
	}
	old := readCredentials(s.f)
	if old == nil || fingerprint(old.Credentials) != fp {
		sc := storedCredentials{Credentials: *c, Registered: true, Source: "file", UpdatedAt: s.cfg.Now().UnixNano()}
		if err := s.storeCredentials(ctx, sc, old); err != nil {
			return err
		}
		s.log.Info("imported CAPI credentials", "login", c.Login, "url", c.URL)
	}
	return s.setConfig(ctx, KeyImported, []byte(fp))
}

func (s *Service) storeCredentials(ctx context.Context, sc storedCredentials, old *storedCredentials) error {
	b, _ := json.Marshal(sc)
	if err := s.setConfig(ctx, KeyCredentials, b); err != nil {
		return err
	}
	if old == nil || old.Login != sc.Login || old.URL != sc.URL {
		// a token belongs to a login
		return s.setConfig(ctx, KeyToken, nil)
	}
	return nil
}

func (s *Service) registerRequested() (registerRequest, bool) {
	var r registerRequest
	ok := readJSON(s.f, KeyRegisterRequest, &r)
	return r, ok
}

func (s *Service) clearRegisterRequest(ctx context.Context) {
	if s.f.Config(KeyRegisterRequest) == nil {
		return
	}
	if err := s.setConfig(ctx, KeyRegisterRequest, nil); err != nil {
		s.log.Warn("cannot clear the CAPI registration request", "err", err)
	}
}

// registerURL: --capi-url when given, else the URL of the current
// credentials, else the default.
func (s *Service) registerURL() string {
	if !s.cfg.OverrideURL {
		if sc := readCredentials(s.f); sc != nil && sc.URL != "" {
			return sc.URL
		}
	}
	return s.cfg.URL
}

// register serves a registration request. The new credentials are chosen
// once and kept in the (replicated) request, so a leader change in the
// middle makes the next leader retry with the same ids; they replace the
// stored credentials only once CAPI accepted them. Failures are recorded
// in the request for the admin API.
func (s *Service) register(ctx context.Context, req registerRequest) error {
	if req.Pending == nil {
		c, err := GenerateCredentials(s.registerURL())
		if err != nil {
			return err
		}
		req.Pending = &c
		if err := s.setJSON(ctx, KeyRegisterRequest, req); err != nil {
			return err
		}
	}
	c := *req.Pending
	err := s.registerWith(ctx, c)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, errNotLeader) {
			s.noteErr(epRegister, err)
			if req.LastError != err.Error() {
				req.LastError = err.Error()
				_ = s.setJSON(ctx, KeyRegisterRequest, req)
			}
		}
		return err
	}
	sc := storedCredentials{Credentials: c, Registered: true, Source: "register", UpdatedAt: s.cfg.Now().UnixNano()}
	if err := s.storeCredentials(ctx, sc, readCredentials(s.f)); err != nil {
		return err
	}
	s.clearRegisterRequest(ctx)
	s.log.Info("registered with CAPI", "login", c.Login, "url", c.URL)
	return nil
}

// registerWith calls v3/watchers; a refusal (4xx) is accepted when the
// credentials can log in (a previous leader registered them already).
func (s *Service) registerWith(ctx context.Context, c Credentials) error {
	cl, err := NewClient(&s.cfg, c)
	if err != nil {
		return err
	}
	cl.Observe = s.metrics.observe
	s.log.Info("registering with CAPI", "login", c.Login, "url", c.URL)
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	err = cl.Register(rctx)
	cancel()
	if err == nil {
		return nil
	}
	st := StatusOf(err)
	if st < 400 || st >= 500 || st == http.StatusTooManyRequests {
		return fmt.Errorf("CAPI registration: %w", err)
	}
	lctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	_, lerr := cl.ensureToken(lctx)
	cancel()
	if lerr != nil {
		return fmt.Errorf("CAPI registration: %w", err)
	}
	return nil
}

const idAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYabcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) (string, error) {
	var b strings.Builder
	max := big.NewInt(int64(len(idAlphabet)))
	for i := 0; i < n; i++ {
		k, err := rand.Int(rand.Reader, max)
		if err != nil {
			return "", err
		}
		b.WriteByte(idAlphabet[k.Int64()])
	}
	return b.String(), nil
}

// GenerateCredentials makes cscli-style credentials: a 48-char machine id
// (32 chars of /etc/machine-id, or of a random UUID, then 16 random
// chars) and a 64-char password.
func GenerateCredentials(baseURL string) (Credentials, error) {
	prefix := ""
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		prefix = strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")
	}
	if len(prefix) < 32 {
		prefix = strings.ReplaceAll(uuid.NewString(), "-", "")
	}
	suffix, err := randomString(16)
	if err != nil {
		return Credentials{}, err
	}
	pw, err := randomString(64)
	if err != nil {
		return Credentials{}, err
	}
	if baseURL == "" {
		baseURL = DefaultURL
	}
	return Credentials{URL: baseURL, Login: prefix[:32] + suffix, Password: pw}, nil
}

// RequestRegistration asks the leader (through the replicated state) to
// register; force replaces existing credentials. A request already
// pending keeps its chosen credentials.
func (s *Service) RequestRegistration(ctx context.Context, force bool) error {
	req := registerRequest{Force: force, At: s.cfg.Now().UnixNano()}
	if old, ok := s.registerRequested(); ok {
		req.Pending = old.Pending
	}
	b, _ := json.Marshal(req)
	res, err := s.c.Apply(ctx, fsm.Command{Type: fsm.CmdSetConfig, Body: fsm.SetConfig{Key: KeyRegisterRequest, Value: b}})
	if err != nil {
		return err
	}
	if res.Err() != nil {
		return res.Err()
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// apply submits a command while this node leads.
func (s *Service) apply(ctx context.Context, t fsm.CmdType, body any) (*fsm.Result, error) {
	return s.applyCmd(ctx, fsm.Command{Type: t, Body: body})
}

// applyCmd is apply for a command that may carry a request ID.
func (s *Service) applyCmd(ctx context.Context, c fsm.Command) (*fsm.Result, error) {
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if !s.c.IsLeader() {
		return nil, errNotLeader
	}
	res, err := s.c.Apply(ctx, c)
	if err != nil {
		return nil, err
	}
	if res.Err() != nil {
		return res, res.Err()
	}
	return res, nil
}

func (s *Service) setConfig(ctx context.Context, key string, value []byte) error {
	_, err := s.apply(ctx, fsm.CmdSetConfig, fsm.SetConfig{Key: key, Value: value})
	return err
}

func (s *Service) setJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.setConfig(ctx, key, b)
}

// scenarios is the union of the machines' scenario lists (login body).
func (s *Service) scenarios() []string {
	seen := map[string]bool{}
	out := []string{}
	for _, m := range s.f.Machines() {
		for _, sc := range strings.Split(m.Scenarios, ",") {
			sc = strings.TrimSpace(sc)
			if sc != "" && !seen[sc] {
				seen[sc] = true
				out = append(out, sc)
			}
		}
	}
	return out
}

// noteOK records a successful operation (and the end of a failure streak).
func (s *Service) noteOK(op string) {
	now := s.cfg.Now()
	s.mu.Lock()
	streak, since := s.mem.streak, s.mem.streakStart
	s.mem.streak = 0
	switch op {
	case "pull":
		s.mem.lastPull = now
	case "push":
		s.mem.lastPush = now
	case "metrics":
		s.mem.lastMetrics = now
	case "usage_metrics":
		s.mem.lastUsage = now
	}
	s.mu.Unlock()
	s.metrics.streak.Set(0)
	s.metrics.lastSuccess.WithLabelValues(op).Set(float64(now.UnixNano()) / 1e9)
	if streak > 0 {
		s.log.Info("CAPI reachable again", "failed_attempts", streak, "for", now.Sub(since).Round(time.Second).String())
	}
}

// noteErr records a failure: one warning per failure streak, debug lines
// for the rest.
func (s *Service) noteErr(op string, err error) {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, errNotLeader) {
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	s.mem.lastError = op + ": " + err.Error()
	s.mem.lastErrorAt = now
	s.mem.errorCount++
	s.mem.streak++
	first := s.mem.streak == 1
	if first {
		s.mem.streakStart = now
	}
	streak := s.mem.streak
	s.mu.Unlock()
	s.metrics.streak.Set(float64(streak))
	if first {
		s.log.Warn("CAPI call failed; retrying in the background (further failures are logged at debug level until it recovers)",
			"operation", op, "err", err)
	} else {
		s.log.Debug("CAPI call failed again", "operation", op, "failures", streak, "err", err)
	}
}

// jittered returns d ± delta, at least 1ns.
func jittered(d, delta time.Duration) time.Duration {
	if delta <= 0 {
		return d
	}
	r := d + time.Duration(mrand.Int64N(int64(2*delta))) - delta
	if r <= 0 {
		return 1
	}
	return r
}
