// Package capitest is a fake CrowdSec Central API for tests: plain HTTP on
// a random loopback port, every request recorded (gunzipped), responses
// scriptable per endpoint, counters per endpoint and per caller.
//
// It implements the minimum useful double of the CAPI contract
// (../shared/spec/capi.md §9): register, login with unsigned but
// well-formed JWTs, the v3 decisions stream with links pointing back at
// the fake, blocklist and allowlist downloads, signals, metrics, usage
// metrics and deleted-decision sync.
package capitest

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"
)

// Endpoint names used by the counters, scripts and request records.
const (
	Register        = "register"
	Login           = "login"
	Enroll          = "enroll"
	Stream          = "stream"
	Signals         = "signals"
	Metrics         = "metrics"
	UsageMetrics    = "usage-metrics"
	DecisionsDelete = "decisions-delete"
	Blocklist       = "blocklist"
	Allowlist       = "allowlist"
	Unknown         = "unknown"
)

// Request is one recorded request.
type Request struct {
	Endpoint string
	Caller   string
	Method   string
	Path     string
	Query    url.Values
	Header   http.Header
	// Body is the request body, gunzipped when Content-Encoding is gzip.
	Body []byte
	// Gzipped reports whether the body arrived gzip-encoded.
	Gzipped bool
	// Status is the status code the fake answered.
	Status int
	Time   time.Time
}

// Response is a scripted answer. A zero Status means "behave normally"
// (useful to add only a Delay).
type Response struct {
	Status int
	Body   string
	Header http.Header
	// Delay is waited before answering (the client may give up first).
	Delay time.Duration
}

// Decision is one value of a community stream group.
type Decision struct {
	Value    string `json:"value"`
	Duration string `json:"duration"`
}

// NewGroup is one element of the stream's "new" list.
type NewGroup struct {
	Scenario  string     `json:"scenario"`
	Scope     string     `json:"scope"`
	Decisions []Decision `json:"decisions"`
}

// DeletedGroup is one element of the stream's "deleted" list.
type DeletedGroup struct {
	Scope     string   `json:"scope"`
	Decisions []string `json:"decisions"`
}

// BlocklistLink points at a blocklist download.
type BlocklistLink struct {
	Name        string `json:"name"`
	URL         string `json:"url"`
	Remediation string `json:"remediation"`
	Scope       string `json:"scope"`
	Duration    string `json:"duration"`
}

// AllowlistLink points at an allowlist download.
type AllowlistLink struct {
	Name        string    `json:"name"`
	Description string    `json:"description"`
	URL         string    `json:"url"`
	ID          string    `json:"id"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Links is the stream's "links" object.
type Links struct {
	Blocklists []BlocklistLink `json:"blocklists,omitempty"`
	Allowlists []AllowlistLink `json:"allowlists,omitempty"`
}

// StreamResponse is what GET /v3/decisions/stream answers.
type StreamResponse struct {
	New     []NewGroup     `json:"new,omitempty"`
	Deleted []DeletedGroup `json:"deleted,omitempty"`
	Links   *Links         `json:"links,omitempty"`
}

// AllowlistItem is one NDJSON line of an allowlist download.
type AllowlistItem struct {
	Value       string     `json:"value"`
	Description string     `json:"description,omitempty"`
	Expiration  *time.Time `json:"expiration,omitempty"`
	CreatedAt   *time.Time `json:"created_at,omitempty"`
}

type blocklist struct {
	body     []byte
	modified time.Time
}

// Server is the fake CAPI.
type Server struct {
	*httptest.Server

	mu sync.Mutex
	// CallerHeader names the request header used to attribute calls to a
	// caller (default User-Agent).
	callerHeader string
	tokenTTL     time.Duration
	claims       map[string]any
	requireAuth  bool
	rejectDupReg bool

	watchers   map[string]string // machine_id -> password
	tokens     map[string]time.Time
	scenarios  map[string][]string // machine_id -> last login scenarios
	requests   []Request
	scripts    map[string][]Response
	stream     StreamResponse
	streamFn   func(call int) StreamResponse
	blocklists map[string]*blocklist
	allowlists map[string][]byte
	streamN    int
	inflight   map[string]int
}

// New starts a fake CAPI on a random loopback port. Close it when done
// (t.Cleanup(s.Close)).
func New() *Server {
	s := &Server{
		callerHeader: "User-Agent",
		tokenTTL:     time.Hour,
		requireAuth:  true,
		watchers:     map[string]string{},
		tokens:       map[string]time.Time{},
		scenarios:    map[string][]string{},
		scripts:      map[string][]Response{},
		blocklists:   map[string]*blocklist{},
		allowlists:   map[string][]byte{},
		inflight:     map[string]int{},
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// BaseURL is the API base URL with its trailing slash, as it goes into
// online_api_credentials.yaml.
func (s *Server) BaseURL() string { return s.Server.URL + "/" }

// SetCallerHeader changes the header used to attribute requests.
func (s *Server) SetCallerHeader(h string) {
	s.mu.Lock()
	s.callerHeader = h
	s.mu.Unlock()
}

// SetTokenTTL sets the lifetime of the tokens issued from now on.
func (s *Server) SetTokenTTL(d time.Duration) {
	s.mu.Lock()
	s.tokenTTL = d
	s.mu.Unlock()
}

// SetClaims adds claims to issued tokens (organization_id,
// subscription_type...).
func (s *Server) SetClaims(c map[string]any) {
	s.mu.Lock()
	s.claims = c
	s.mu.Unlock()
}

// SetRequireAuth toggles the Bearer check on v3 routes (default on).
func (s *Server) SetRequireAuth(v bool) {
	s.mu.Lock()
	s.requireAuth = v
	s.mu.Unlock()
}

// SetRejectDuplicateRegistration makes a second registration of the same
// machine_id answer 403.
func (s *Server) SetRejectDuplicateRegistration(v bool) {
	s.mu.Lock()
	s.rejectDupReg = v
	s.mu.Unlock()
}

// AddWatcher pre-registers credentials (as if registered earlier).
func (s *Server) AddWatcher(login, password string) {
	s.mu.Lock()
	s.watchers[login] = password
	s.mu.Unlock()
}

// Watchers returns the registered machine ids.
func (s *Server) Watchers() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.watchers))
	for k, v := range s.watchers {
		out[k] = v
	}
	return out
}

// LoginScenarios returns the scenarios sent at the last login of login.
func (s *Server) LoginScenarios(login string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.scenarios[login]...)
}

// RevokeTokens forgets every issued token (the next v3 call gets a 401).
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	s.tokens = map[string]time.Time{}
	s.mu.Unlock()
}

// Script queues one-shot responses for an endpoint, used in order before
// the default behaviour resumes.
func (s *Server) Script(endpoint string, rs ...Response) {
	s.mu.Lock()
	s.scripts[endpoint] = append(s.scripts[endpoint], rs...)
	s.mu.Unlock()
}

// SetStream sets the answer of every following stream call.
func (s *Server) SetStream(r StreamResponse) {
	s.mu.Lock()
	s.stream = r
	s.streamFn = nil
	s.mu.Unlock()
}

// SetStreamFunc computes the stream answer from the call number (1-based).
func (s *Server) SetStreamFunc(fn func(call int) StreamResponse) {
	s.mu.Lock()
	s.streamFn = fn
	s.mu.Unlock()
}

// SetBlocklist sets a blocklist's content; its modification time (sent as
// Last-Modified) becomes now, or one second after the previous one.
func (s *Server) SetBlocklist(name string, values []string) {
	var b bytes.Buffer
	b.Grow(len(values) * 16)
	for _, v := range values {
		b.WriteString(v)
		b.WriteByte('\n')
	}
	s.mu.Lock()
	// Modification times are whole seconds (HTTP dates) and strictly
	// increase, so a change is never hidden by a same-second download.
	mod := time.Now().UTC().Truncate(time.Second)
	if old := s.blocklists[name]; old != nil && !mod.After(old.modified) {
		mod = old.modified.Add(time.Second)
	}
	s.blocklists[name] = &blocklist{body: b.Bytes(), modified: mod}
	s.mu.Unlock()
}

// BlocklistURL is the download URL of a blocklist.
func (s *Server) BlocklistURL(name string) string {
	return s.Server.URL + "/blocklists/" + url.PathEscape(name)
}

// BlocklistLink builds a stream link for a blocklist served here.
func (s *Server) BlocklistLink(name, remediation, scope, duration string) BlocklistLink {
	return BlocklistLink{Name: name, URL: s.BlocklistURL(name), Remediation: remediation, Scope: scope, Duration: duration}
}

// SetAllowlist sets an allowlist's items (by its console id).
func (s *Server) SetAllowlist(id string, items []AllowlistItem) {
	var b bytes.Buffer
	for _, it := range items {
		line, _ := json.Marshal(it)
		b.Write(line)
		b.WriteByte('\n')
	}
	s.mu.Lock()
	s.allowlists[id] = b.Bytes()
	s.mu.Unlock()
}

// AllowlistLink builds a stream link for an allowlist served here.
func (s *Server) AllowlistLink(id, name, description string) AllowlistLink {
	now := time.Now().UTC().Truncate(time.Second)
	return AllowlistLink{Name: name, Description: description, URL: s.Server.URL + "/allowlists/" + url.PathEscape(id),
		ID: id, CreatedAt: now, UpdatedAt: now}
}

// Requests returns the recorded requests of an endpoint ("" = all).
func (s *Server) Requests(endpoint string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.requests {
		if endpoint == "" || r.Endpoint == endpoint {
			out = append(out, r)
		}
	}
	return out
}

// InFlight returns how many requests of an endpoint are being answered
// (recorded requests are the completed ones).
func (s *Server) InFlight(endpoint string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inflight[endpoint]
}

// Count returns how many requests an endpoint received.
func (s *Server) Count(endpoint string) int { return len(s.Requests(endpoint)) }

// CountBy returns how many requests an endpoint received from caller.
func (s *Server) CountBy(endpoint, caller string) int {
	n := 0
	for _, r := range s.Requests(endpoint) {
		if r.Caller == caller {
			n++
		}
	}
	return n
}

// Callers returns the number of requests per caller (all endpoints).
func (s *Server) Callers() map[string]int {
	out := map[string]int{}
	for _, r := range s.Requests("") {
		out[r.Caller]++
	}
	return out
}

// CallersOf returns the distinct callers of an endpoint, sorted.
func (s *Server) CallersOf(endpoint string) []string {
	seen := map[string]bool{}
	for _, r := range s.Requests(endpoint) {
		seen[r.Caller] = true
	}
	out := make([]string, 0, len(seen))
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Signal is a received signal, decoded loosely.
type Signal map[string]any

// UUID returns the signal's uuid.
func (sg Signal) UUID() string { v, _ := sg["uuid"].(string); return v }

// Signals returns every signal received by successful POST /v3/signals
// calls, in arrival order.
func (s *Server) Signals() []Signal {
	var out []Signal
	for _, r := range s.Requests(Signals) {
		if r.Status/100 != 2 {
			continue
		}
		var batch []Signal
		if json.Unmarshal(r.Body, &batch) == nil {
			out = append(out, batch...)
		}
	}
	return out
}

// Reset forgets recorded requests (credentials, tokens and lists stay).
func (s *Server) Reset() {
	s.mu.Lock()
	s.requests = nil
	s.mu.Unlock()
}

func classify(method, path string) string {
	switch {
	case path == "/v3/watchers" && method == http.MethodPost:
		return Register
	case path == "/v3/watchers/login":
		return Login
	case path == "/v3/watchers/enroll":
		return Enroll
	case path == "/v3/decisions/stream":
		return Stream
	case path == "/v3/signals":
		return Signals
	case path == "/v3/metrics/" || path == "/v3/metrics":
		return Metrics
	case path == "/v3/usage-metrics":
		return UsageMetrics
	case path == "/v3/decisions/delete":
		return DecisionsDelete
	case strings.HasPrefix(path, "/blocklists/"):
		return Blocklist
	case strings.HasPrefix(path, "/allowlists/"):
		return Allowlist
	}
	return Unknown
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) serve(rw http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	body, gz := raw, false
	if strings.EqualFold(r.Header.Get("Content-Encoding"), "gzip") {
		gz = true
		if zr, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
			if b, err := io.ReadAll(zr); err == nil {
				body = b
			}
		}
	}
	ep := classify(r.Method, r.URL.Path)
	s.mu.Lock()
	rec := Request{Endpoint: ep, Caller: r.Header.Get(s.callerHeader), Method: r.Method, Path: r.URL.Path,
		Query: r.URL.Query(), Header: r.Header.Clone(), Body: body, Gzipped: gz, Time: time.Now()}
	s.inflight[ep]++
	var script *Response
	if q := s.scripts[ep]; len(q) > 0 {
		script = &q[0]
		s.scripts[ep] = q[1:]
	}
	s.mu.Unlock()

	w := &statusWriter{ResponseWriter: rw}
	defer func() {
		rec.Status = w.status
		s.mu.Lock()
		s.requests = append(s.requests, rec)
		s.inflight[ep]--
		s.mu.Unlock()
	}()
	if script != nil {
		if script.Delay > 0 {
			select {
			case <-time.After(script.Delay):
			case <-r.Context().Done():
				w.status = 499 // client gave up
				return
			}
		}
		if script.Status != 0 {
			for k, v := range script.Header {
				w.Header()[k] = v
			}
			if script.Body != "" && w.Header().Get("Content-Type") == "" {
				w.Header().Set("Content-Type", "application/json")
			}
			w.WriteHeader(script.Status)
			_, _ = io.WriteString(w, script.Body)
			return
		}
	}
	switch ep {
	case Register:
		s.register(w, body)
	case Login:
		s.login(w, body)
	case Blocklist:
		s.blocklist(w, r)
	case Allowlist:
		s.allowlist(w, r)
	case Unknown:
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "unknown route " + r.URL.Path})
	default:
		if !s.authorized(r) {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "token missing, unknown or expired"})
			return
		}
		switch ep {
		case Stream:
			s.mu.Lock()
			s.streamN++
			resp := s.stream
			if s.streamFn != nil {
				resp = s.streamFn(s.streamN)
			}
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, resp)
		case Signals:
			var arr []json.RawMessage
			if err := json.Unmarshal(body, &arr); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"message": "invalid signals: " + err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"message": "OK"})
		case UsageMetrics:
			writeJSON(w, http.StatusCreated, map[string]string{"message": "OK"})
		case DecisionsDelete:
			var arr []string
			if err := json.Unmarshal(body, &arr); err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, map[string]string{"message": "OK"})
		default:
			writeJSON(w, http.StatusOK, map[string]string{"message": "OK"})
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (s *Server) authorized(r *http.Request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.requireAuth {
		return true
	}
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return false
	}
	exp, ok := s.tokens[tok]
	return ok && time.Now().Before(exp)
}

type creds struct {
	MachineID string   `json:"machine_id"`
	Password  string   `json:"password"`
	Scenarios []string `json:"scenarios"`
}

func (s *Server) register(w http.ResponseWriter, body []byte) {
	var c creds
	if err := json.Unmarshal(body, &c); err != nil || c.MachineID == "" || c.Password == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "machine_id and password are required"})
		return
	}
	s.mu.Lock()
	_, dup := s.watchers[c.MachineID]
	if dup && s.rejectDupReg {
		s.mu.Unlock()
		writeJSON(w, http.StatusForbidden, map[string]string{"message": "machine already registered"})
		return
	}
	s.watchers[c.MachineID] = c.Password
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"message": "OK"})
}

// MakeToken builds an unsigned-but-well-formed JWT with a numeric exp.
func MakeToken(sub string, exp time.Time, extra map[string]any) string {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	claims := map[string]any{"id": sub, "exp": exp.Unix(), "orig_iat": time.Now().Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	payload, _ := json.Marshal(claims)
	sig := make([]byte, 32)
	_, _ = rand.Read(sig)
	return enc.EncodeToString(head) + "." + enc.EncodeToString(payload) + "." + enc.EncodeToString(sig)
}

// IssueToken creates a token this fake accepts (tests that preload a
// cached token).
func (s *Server) IssueToken(login string, ttl time.Duration) string {
	exp := time.Now().Add(ttl)
	s.mu.Lock()
	claims := s.claims
	s.mu.Unlock()
	tok := MakeToken(login, exp, claims)
	s.mu.Lock()
	s.tokens[tok] = exp
	s.mu.Unlock()
	return tok
}

func (s *Server) login(w http.ResponseWriter, body []byte) {
	var c creds
	if err := json.Unmarshal(body, &c); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
		return
	}
	s.mu.Lock()
	pw, ok := s.watchers[c.MachineID]
	ttl := s.tokenTTL
	if ok && pw == c.Password {
		s.scenarios[c.MachineID] = c.Scenarios
	}
	s.mu.Unlock()
	if !ok || pw != c.Password {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "incorrect Username or Password"})
		return
	}
	tok := s.IssueToken(c.MachineID, ttl)
	writeJSON(w, http.StatusOK, map[string]any{"code": 200, "expire": time.Now().Add(ttl).UTC().Format(time.RFC3339),
		"token": tok})
}

func (s *Server) blocklist(w http.ResponseWriter, r *http.Request) {
	name, _ := url.PathUnescape(strings.TrimPrefix(r.URL.Path, "/blocklists/"))
	s.mu.Lock()
	bl := s.blocklists[name]
	s.mu.Unlock()
	if bl == nil {
		http.Error(w, "no such blocklist", http.StatusNotFound)
		return
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !bl.modified.After(t) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Last-Modified", bl.modified.UTC().Format(http.TimeFormat))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(bl.body)
}

func (s *Server) allowlist(w http.ResponseWriter, r *http.Request) {
	id, _ := url.PathUnescape(strings.TrimPrefix(r.URL.Path, "/allowlists/"))
	s.mu.Lock()
	body, ok := s.allowlists[id]
	s.mu.Unlock()
	if !ok {
		http.Error(w, "no such allowlist", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// String describes the recorded traffic (debugging aid).
func (s *Server) String() string {
	var b strings.Builder
	for _, r := range s.Requests("") {
		fmt.Fprintf(&b, "%s %s %s?%s -> %d (%s)\n", r.Time.Format("15:04:05.000"), r.Method, r.Path, r.Query.Encode(), r.Status, r.Caller)
	}
	return b.String()
}
