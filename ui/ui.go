package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// AuditEntry is one line of the replicated audit trail, as the audit page
// shows it (Config.AuditLog).
type AuditEntry struct {
	Time                              time.Time
	Node, Who, Action, Target, Detail string
}

// Config is what a console needs of its node. FSM and Admin are required;
// a nil hook turns its feature off.
type Config struct {
	// FSM is the node's state machine: the big lists (decisions, alerts)
	// are read from its published state, and live updates follow its
	// applied index.
	FSM *fsm.FSM
	// Admin is the node's admin API (admin.Handler): every write, and the
	// small reads (cluster status, machines, bouncers, certificates, CAPI
	// status), go through it in-process, exactly as the CLI's do.
	Admin http.Handler
	// NodeID is this node's ID (shown in the header).
	NodeID string
	// BaseURL is the node's advertised API URL (https://host:port/), the
	// base of the login links `halapi ui login` prints.
	BaseURL string
	// PlainHTTP: the console is served over plain HTTP (the session
	// cookie is then not Secure).
	PlainHTTP bool
	Logger    *slog.Logger

	// CertIdentity accepts or refuses a browser's client certificate as an
	// operator's (nil: no certificate sign-in).
	CertIdentity func(cs *tls.ConnectionState) (name string, err error)
	// Audit records a write the console made (nil: logged only).
	Audit func(ctx context.Context, who, action, target, detail string) error
	// AuditLog returns the latest audit entries (nil: no audit page).
	AuditLog func(limit int) []AuditEntry
	// Country returns the ISO country code of an IP (nil: no country
	// column; wired to the GeoIP database when one is configured).
	Country func(ip string) string
	// HTTPClient is used by the CAPI connectivity test (nil: a client with
	// a 5 s timeout).
	HTTPClient *http.Client

	// SessionTTL is how long a session lasts (default 8 h); MaxSessions
	// bounds the sessions held (default 256; the oldest goes first);
	// MaxLoginTokens bounds the unused login links (default 32);
	// MaxEventClients bounds the live-update streams (default 64).
	SessionTTL      time.Duration
	MaxSessions     int
	MaxLoginTokens  int
	MaxEventClients int
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Console is a node's web console.
type Console struct {
	cfg      Config
	log      *slog.Logger
	pages    map[string]*template.Template
	sessions *sessionStore
	tokens   *tokenStore
	hub      *hub
	mux      *http.ServeMux
	static   http.Handler
	assets   string // version of the embedded assets, in their URLs

	countMu  sync.Mutex
	countIdx uint64
	countAt  time.Time
	countN   int

	elMu     sync.Mutex
	seenTerm uint64
	seenLead string
	election *electionSeen
}

type electionSeen struct {
	Term   uint64
	Leader string
	At     time.Time
}

// Defaults.
const (
	DefaultSessionTTL = 8 * time.Hour
	DefaultLoginTTL   = 10 * time.Minute
	MaxLoginTTL       = 24 * time.Hour
	maxFormBytes      = 64 << 10
	maxFormValues     = 1100
	maxSelection      = 500
)

var pageNames = []string{"login", "cluster", "decisions", "alerts", "machines", "bouncers", "certs", "capi", "audit"}

// New returns a console for cfg.
func New(cfg Config) (*Console, error) {
	if cfg.FSM == nil || cfg.Admin == nil {
		return nil, errors.New("ui: Config.FSM and Config.Admin are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 256
	}
	if cfg.MaxLoginTokens <= 0 {
		cfg.MaxLoginTokens = 32
	}
	if cfg.MaxEventClients <= 0 {
		cfg.MaxEventClients = 64
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Console{cfg: cfg, log: log, pages: map[string]*template.Template{},
		sessions: newSessionStore(cfg.MaxSessions, cfg.SessionTTL, cfg.Now),
		tokens:   newTokenStore(cfg.MaxLoginTokens, cfg.Now)}
	c.hub = newHub(c, cfg.MaxEventClients)
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("ui: templates: %w", err)
	}
	for _, p := range pageNames {
		t, err := template.Must(layout.Clone()).ParseFS(templateFS, "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("ui: template %s: %w", p, err)
		}
		c.pages[p] = t
	}
	sub, _ := fs.Sub(staticFS, "static")
	c.assets = assetVersion(sub)
	c.static = http.StripPrefix("/ui/static/", http.FileServer(http.FS(sub)))
	c.routes()
	return c, nil
}

var funcs = template.FuncMap{
	"ts": func(t *time.Time) string {
		if t == nil || t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"tv": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"join": strings.Join,
}

// Handler serves the console: everything under /ui/.
func (c *Console) Handler() http.Handler {
	return http.HandlerFunc(c.serve)
}

func (c *Console) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	// No HSTS: it would bind every port of the host name to HTTPS
	// (a plain /metrics listener, another service), beyond this console.
	if r.URL.Path == "/ui" {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/ui/static/") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		if strings.HasSuffix(r.URL.Path, "/") { // no directory listing
			c.plainError(w, http.StatusNotFound, "not found")
			return
		}
		h.Set("Cache-Control", "public, max-age=3600")
		c.static.ServeHTTP(w, r)
		return
	}
	h.Set("Cache-Control", "no-store")
	if r.Method == http.MethodPost {
		if !c.sameOrigin(r) {
			c.plainError(w, http.StatusForbidden, "cross-origin request refused")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			c.plainError(w, http.StatusBadRequest, "invalid form")
			return
		}
		n := 0
		for _, vs := range r.PostForm {
			n += len(vs)
		}
		if n > maxFormValues {
			c.plainError(w, http.StatusBadRequest, "too many form values")
			return
		}
	}
	c.mux.ServeHTTP(w, r)
}

// sameOrigin refuses a POST whose Origin (when the browser sends one)
// is not this host: a second line behind SameSite=Strict and the CSRF
// token.
func (c *Console) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

func (c *Console) plainError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
}

func (c *Console) routes() {
	m := http.NewServeMux()
	m.HandleFunc("GET /ui/login", c.loginPage)
	m.HandleFunc("POST /ui/login/cert", c.certSignIn)
	m.HandleFunc("GET /ui/logout", c.logout)
	m.HandleFunc("POST /ui/logout", c.logout)
	page := func(fn func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			s := c.sessionOf(r)
			if s == nil {
				c.renderLogin(w, r, http.StatusUnauthorized, "")
				return
			}
			fn(w, r, s)
		}
	}
	post := func(fn func(w http.ResponseWriter, r *http.Request, s *session)) http.HandlerFunc {
		return page(func(w http.ResponseWriter, r *http.Request, s *session) {
			if !s.checkCSRF(r.PostFormValue("csrf")) {
				c.plainError(w, http.StatusForbidden, "invalid or missing CSRF token")
				return
			}
			fn(w, r, s)
		})
	}
	m.HandleFunc("GET /ui/{$}", page(c.clusterPage))
	m.HandleFunc("GET /ui/cluster", page(c.clusterPage))
	m.HandleFunc("GET /ui/decisions", page(c.decisionsPage))
	m.HandleFunc("GET /ui/alerts", page(c.alertsPage))
	m.HandleFunc("GET /ui/machines", page(c.machinesPage))
	m.HandleFunc("GET /ui/bouncers", page(c.bouncersPage))
	m.HandleFunc("GET /ui/certs", page(c.certsPage))
	m.HandleFunc("GET /ui/capi", page(c.capiPage))
	m.HandleFunc("GET /ui/audit", page(c.auditPage))
	m.HandleFunc("GET /ui/events", c.events)
	m.HandleFunc("POST /ui/decisions/add", post(c.addDecision))
	m.HandleFunc("POST /ui/decisions/unban", post(c.unban))
	m.HandleFunc("POST /ui/machines/validate", post(c.validateMachine))
	m.HandleFunc("POST /ui/machines/delete", post(c.deleteMachine))
	m.HandleFunc("POST /ui/bouncers/delete", post(c.deleteBouncer))
	m.HandleFunc("POST /ui/certs/revoke", post(c.revokeCert))
	m.HandleFunc("POST /ui/certs/token", post(c.newToken))
	m.HandleFunc("POST /ui/capi/test", post(c.capiTest))
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		if c.sessionOf(r) == nil {
			c.renderLogin(w, r, http.StatusUnauthorized, "")
			return
		}
		c.plainError(w, http.StatusNotFound, "not found")
	})
	c.mux = m
}

// adminError is a non-2xx answer of the admin API: its message.
type adminError struct {
	Status  int
	Message string
}

func (e *adminError) Error() string { return e.Message }

// recorder is the in-process response of an admin call.
type recorder struct {
	h    http.Header
	code int
	buf  bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.buf.Write(p)
}

// call sends one request to the node's admin API in-process (the CLI's
// path, without the socket) and decodes a JSON answer into out.
func (c *Console) call(ctx context.Context, method, path string, q url.Values, body, out any) error {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	u := "/admin/v1" + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://admin"+u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := &recorder{h: http.Header{}}
	c.cfg.Admin.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	if rec.code >= 300 {
		var m struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(rec.buf.Bytes(), &m) != nil || m.Message == "" {
			m.Message = fmt.Sprintf("%s %s: HTTP %d", method, path, rec.code)
		}
		return &adminError{Status: rec.code, Message: m.Message}
	}
	if out != nil && rec.buf.Len() > 0 {
		if err := json.Unmarshal(rec.buf.Bytes(), out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// wrote records a write the console made: one info line, and the audit
// hook. Never a secret in either.
func (c *Console) wrote(ctx context.Context, s *session, action, target, detail string) {
	c.log.Info("ui write", "who", s.who, "action", action, "target", target, "detail", detail)
	if c.cfg.Audit != nil {
		if err := c.cfg.Audit(ctx, s.who, action, target, detail); err != nil {
			c.log.Warn("ui: audit record failed", "who", s.who, "action", action, "target", target, "err", err)
		}
	}
}

// assetVersion is a short hash of the embedded assets: their URLs carry
// it, so a browser's cached copy (1 h) never outlives an upgrade.
func assetVersion(fsys fs.FS) string {
	h := sha256.New()
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := fs.ReadFile(fsys, p)
			h.Write([]byte(p))
			h.Write(b)
		}
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}
