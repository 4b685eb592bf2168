package ui

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"sync"
	"time"
)

// CookieName is the session cookie.
const CookieName = "halapi_ui"

// preCookie carries the login page's CSRF token before any session.
const preCookie = "halapi_ui_pre"

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashToken is what the stores keep of a secret: its SHA-256.
func hashToken(t string) string {
	h := sha256.Sum256([]byte(t))
	return hex.EncodeToString(h[:])
}

// session is one signed-in browser.
type session struct {
	who     string // cert:NAME or link:NAME
	csrf    string
	expires time.Time

	mu     sync.Mutex
	flash  *flash
	reveal *reveal
}

type flash struct {
	Msg   string
	Error bool
}

// reveal is a one-time token shown once on the certificates page.
type reveal struct {
	Role, Name, Token, Fingerprint string
}

func (s *session) checkCSRF(v string) bool {
	return v != "" && subtle.ConstantTimeCompare([]byte(v), []byte(s.csrf)) == 1
}

func (s *session) setFlash(msg string, isErr bool) {
	s.mu.Lock()
	s.flash = &flash{Msg: msg, Error: isErr}
	s.mu.Unlock()
}

func (s *session) takeFlash() (*flash, *reveal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, r := s.flash, s.reveal
	s.flash, s.reveal = nil, nil
	return f, r
}

// sessionStore holds the sessions of this node in memory, keyed by the
// hash of the cookie value, bounded (the session closest to expiry is
// dropped for a new one) and expiring.
type sessionStore struct {
	mu   sync.Mutex
	max  int
	ttl  time.Duration
	now  func() time.Time
	byID map[string]*session
}

func newSessionStore(max int, ttl time.Duration, now func() time.Time) *sessionStore {
	return &sessionStore{max: max, ttl: ttl, now: now, byID: map[string]*session{}}
}

// create returns a new session for who and its cookie value.
func (st *sessionStore) create(who string) (string, *session) {
	id := randomToken()
	s := &session{who: who, csrf: randomToken(), expires: st.now().Add(st.ttl)}
	st.mu.Lock()
	defer st.mu.Unlock()
	makeRoom(st.byID, st.max, st.now(), func(o *session) time.Time { return o.expires })
	st.byID[hashToken(id)] = s
	return id, s
}

func (st *sessionStore) get(id string) *session {
	if id == "" || len(id) > 128 {
		return nil
	}
	k := hashToken(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.byID[k]
	if s == nil {
		return nil
	}
	if !st.now().Before(s.expires) {
		delete(st.byID, k)
		return nil
	}
	return s
}

func (st *sessionStore) end(id string) {
	st.mu.Lock()
	delete(st.byID, hashToken(id))
	st.mu.Unlock()
}

func (st *sessionStore) count() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.byID)
}

// loginToken is an unused login link.
type loginToken struct {
	name    string
	expires time.Time
}

// tokenStore holds the unused login links, by hash only, bounded (the
// link closest to expiry is dropped for a new one), single use.
type tokenStore struct {
	mu  sync.Mutex
	max int
	now func() time.Time
	m   map[string]loginToken
}

func newTokenStore(max int, now func() time.Time) *tokenStore {
	return &tokenStore{max: max, now: now, m: map[string]loginToken{}}
}

func (ts *tokenStore) issue(name string, ttl time.Duration) (string, time.Time) {
	tok := randomToken()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.now()
	makeRoom(ts.m, ts.max, now, func(t loginToken) time.Time { return t.expires })
	exp := now.Add(ttl)
	ts.m[hashToken(tok)] = loginToken{name: name, expires: exp}
	return tok, exp
}

// use consumes tok: the name it was issued for, or false when it is
// unknown, already used or expired.
func (ts *tokenStore) use(tok string) (string, bool) {
	if tok == "" || len(tok) > 128 {
		return "", false
	}
	k := hashToken(tok)
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t, ok := ts.m[k]
	if !ok {
		return "", false
	}
	delete(ts.m, k)
	if !ts.now().Before(t.expires) {
		return "", false
	}
	return t.name, true
}

func (c *Console) sessionOf(r *http.Request) *session {
	ck, err := r.Cookie(CookieName)
	if err != nil {
		return nil
	}
	return c.sessions.get(ck.Value)
}

func (c *Console) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/ui/", MaxAge: maxAge, HttpOnly: true,
		Secure: !c.cfg.PlainHTTP, SameSite: http.SameSiteStrictMode})
}

// startSession signs who in and sends the browser to the cluster page.
func (c *Console) startSession(w http.ResponseWriter, r *http.Request, who string) {
	id, _ := c.sessions.create(who)
	c.setCookie(w, CookieName, id, int(c.cfg.SessionTTL/time.Second))
	c.setCookie(w, preCookie, "", -1)
	c.log.Info("ui sign-in", "who", who, "remote", r.RemoteAddr)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// loginPage is GET /ui/login: with ?token= it consumes a login link,
// otherwise it shows how to sign in (and the certificate button when
// the browser presented an accepted certificate).
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if tok := r.URL.Query().Get("token"); tok != "" {
		name, ok := c.tokens.use(tok)
		if !ok {
			c.log.Info("ui sign-in refused: unknown, used or expired login link", "remote", r.RemoteAddr)
			c.renderLogin(w, r, http.StatusUnauthorized, "This login link is unknown, expired or already used: run `halapi ui login` on a node for a new one.")
			return
		}
		c.startSession(w, r, "link:"+name)
		return
	}
	if c.sessionOf(r) != nil {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	c.renderLogin(w, r, http.StatusOK, "")
}

// certName is the identity of the browser's client certificate, when
// CertIdentity accepts it.
func (c *Console) certName(r *http.Request) (string, bool) {
	if c.cfg.CertIdentity == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", false
	}
	name, err := c.cfg.CertIdentity(r.TLS)
	if err != nil || name == "" {
		return "", false
	}
	return name, true
}

func (c *Console) certSignIn(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie(preCookie)
	v := r.PostFormValue("csrf")
	if err != nil || v == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(v)) != 1 {
		c.plainError(w, http.StatusForbidden, "invalid or missing CSRF token")
		return
	}
	name, ok := c.certName(r)
	if !ok {
		c.log.Info("ui sign-in refused: no accepted admin certificate", "remote", r.RemoteAddr)
		c.renderLogin(w, r, http.StatusUnauthorized, "No accepted admin certificate was presented.")
		return
	}
	c.startSession(w, r, "cert:"+name)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(CookieName); err == nil {
		if s := c.sessions.get(ck.Value); s != nil {
			if r.Method == http.MethodPost && !s.checkCSRF(r.PostFormValue("csrf")) {
				c.plainError(w, http.StatusForbidden, "invalid or missing CSRF token")
				return
			}
			c.log.Info("ui sign-out", "who", s.who)
		}
		c.sessions.end(ck.Value)
	}
	c.setCookie(w, CookieName, "", -1)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

type loginData struct {
	Node     string
	Message  string
	CertName string
	CSRF     string
}

func (c *Console) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	d := loginData{Node: c.cfg.NodeID, Message: msg}
	if name, ok := c.certName(r); ok {
		d.CertName = name
		d.CSRF = randomToken()
		c.setCookie(w, preCookie, d.CSRF, 600)
	}
	c.render(w, status, "login", &pageData{Title: "Sign in", Data: d})
}

// makeRoom drops the entries of m that expired at now, then the ones
// closest to expiry until m has room for one more under max.
func makeRoom[V any](m map[string]V, max int, now time.Time, expires func(V) time.Time) {
	for k, v := range m {
		if !now.Before(expires(v)) {
			delete(m, k)
		}
	}
	for len(m) >= max && len(m) > 0 {
		var oldK string
		var oldExp time.Time
		first := true
		for k, v := range m {
			if e := expires(v); first || e.Before(oldExp) {
				oldK, oldExp, first = k, e, false
			}
		}
		delete(m, oldK)
	}
}
