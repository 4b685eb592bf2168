package ui

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/pki"
	"github.com/hashicorp/raft"
)

// direct applies commands straight to the FSM, like a one-node raft.
type direct struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
}

func (d *direct) Apply(_ context.Context, c fsm.Command) (*fsm.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c.Time = time.Now().UnixNano()
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	d.index++
	return d.f.Apply(&raft.Log{Index: d.index, Type: raft.LogCommand, Data: data}).(*fsm.Result), nil
}

func (d *direct) IsLeader() bool { return true }

// fakeCluster answers the cluster status from the FSM, with a leader
// the test may change.
type fakeCluster struct {
	f      *fsm.FSM
	mu     sync.Mutex
	leader string
	term   uint64
}

func (c *fakeCluster) setLeader(id string, term uint64) {
	c.mu.Lock()
	c.leader, c.term = id, term
	c.mu.Unlock()
}

func (c *fakeCluster) Status(context.Context) cluster.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	idx := c.f.AppliedIndex()
	st := cluster.Status{NodeID: "n1", State: "Follower", Leader: c.leader, Term: c.term, CommitIndex: idx, AppliedIndex: idx, Healthy: c.leader != ""}
	for _, id := range []string{"n1", "n2", "n3"} {
		m := cluster.Member{ID: id, Role: "follower", State: "alive", RaftAddr: "127.0.0.1:700" + id[1:], GossipAddr: "127.0.0.1:800" + id[1:], AppliedIndex: idx, CommitIndex: idx}
		if id == c.leader {
			m.Role = "leader"
		}
		if id == "n3" && c.leader != "n3" {
			m.State = "dead"
		}
		st.Members = append(st.Members, m)
	}
	if st.Leader == "n1" {
		st.State = "Leader"
	}
	return st
}

func (c *fakeCluster) Snapshot() error { return nil }
func (c *fakeCluster) WriteBackup(context.Context, io.Writer, string) (cluster.BackupMeta, error) {
	return cluster.BackupMeta{}, nil
}

type auditCall struct{ who, action, target, detail string }

type env struct {
	t       testing.TB
	f       *fsm.FSM
	srv     *lapi.Server
	cl      *fakeCluster
	ca      *pki.CA
	c       *Console
	h       http.Handler
	adminH  http.Handler
	mu      sync.Mutex
	audits  []auditCall
	offset  time.Duration // the console's clock runs this far ahead
	clockMu sync.Mutex
}

func (e *env) now() time.Time {
	e.clockMu.Lock()
	defer e.clockMu.Unlock()
	return time.Now().Add(e.offset)
}

func (e *env) advance(d time.Duration) {
	e.clockMu.Lock()
	e.offset += d
	e.clockMu.Unlock()
}

func (e *env) auditLog() []auditCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]auditCall(nil), e.audits...)
}

// pkiRoutes serves the PKI's admin routes the console uses, on a real CA
// (what pki.Runtime.AdminRoutes does once the CA is loaded).
func pkiRoutes(ca *pki.CA) admin.Routes {
	return func(r *mux.Router) {
		r.HandleFunc("/pki/certs", func(w http.ResponseWriter, _ *http.Request) {
			admin.WriteJSON(w, http.StatusOK, ca.List())
		}).Methods(http.MethodGet)
		r.HandleFunc("/pki/revoke", func(w http.ResponseWriter, r *http.Request) {
			if err := ca.Revoke(r.Context(), r.URL.Query().Get("serial"), r.URL.Query().Get("reason")); err != nil {
				admin.WriteError(w, http.StatusBadRequest, err.Error())
				return
			}
			admin.WriteJSON(w, http.StatusOK, map[string]any{"revoked": []string{r.URL.Query().Get("serial")}})
		}).Methods(http.MethodPost)
		r.HandleFunc("/pki/token", func(w http.ResponseWriter, r *http.Request) {
			role, err := pki.ParseRole(r.URL.Query().Get("role"))
			if err != nil {
				admin.WriteError(w, http.StatusBadRequest, err.Error())
				return
			}
			tok, err := ca.NewToken(r.URL.Query().Get("name"), role, 0)
			if err != nil {
				admin.WriteError(w, http.StatusBadRequest, err.Error())
				return
			}
			admin.WriteJSON(w, http.StatusOK, map[string]string{"token": tok, "fingerprint": ca.Fingerprint()})
		}).Methods(http.MethodPost)
	}
}

func newEnv(t testing.TB, mut ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, f: fsm.New(nil)}
	d := &direct{f: e.f}
	cfg := lapi.DefaultConfig()
	cfg.BcryptCost = 4
	srv, err := lapi.New(cfg, e.f, d, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.OnLeadership(true)
	e.srv = srv
	e.cl = &fakeCluster{f: e.f, leader: "n2", term: 3}
	popts := pki.Options{Logger: slog.New(slog.DiscardHandler)}
	if err := pki.Bootstrap(context.Background(), e.f, d, popts); err != nil {
		t.Fatal(err)
	}
	if e.ca, err = pki.New(e.f, d, popts); err != nil {
		t.Fatal(err)
	}
	// The console calls the admin API, which serves the console's route:
	// the handler is resolved at call time.
	var adminH http.Handler
	lazy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { adminH.ServeHTTP(w, r) })
	ucfg := Config{FSM: e.f, Admin: lazy, NodeID: "n1", BaseURL: "https://127.0.0.1:8443/", Now: e.now,
		Audit: func(_ context.Context, who, action, target, detail string) error {
			e.mu.Lock()
			e.audits = append(e.audits, auditCall{who, action, target, detail})
			e.mu.Unlock()
			return nil
		}}
	for _, m := range mut {
		m(&ucfg)
	}
	console, err := New(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	adminH = admin.Handler(nil, srv.AdminRoutes, admin.ClusterRoutes(e.cl, nil, "test"), pkiRoutes(e.ca), console.AdminRoutes)
	e.c, e.h, e.adminH = console, console.Handler(), adminH
	return e
}

// loginLink asks the admin route for a login link, as `halapi ui login`.
func (e *env) loginLink(q string) string {
	e.t.Helper()
	rec := httptest.NewRecorder()
	e.adminH.ServeHTTP(rec, httptest.NewRequest("POST", "/admin/v1/ui/login"+q, nil))
	if rec.Code != 200 {
		e.t.Fatalf("login link: %d %s", rec.Code, rec.Body)
	}
	var l LoginLink
	if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
		e.t.Fatal(err)
	}
	return l.URL
}

// browser is a cookie-keeping client of the console's handler.
type browser struct {
	e       *env
	cookies map[string]*http.Cookie
}

func (e *env) browser() *browser { return &browser{e: e, cookies: map[string]*http.Cookie{}} }

type page struct {
	code int
	body string
	hdr  http.Header
}

func (b *browser) do(method, target string, form url.Values) page {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, target, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, c := range b.cookies {
		req.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	b.e.h.ServeHTTP(rec, req)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return page{code: rec.Code, body: rec.Body.String(), hdr: rec.Header()}
}

func (b *browser) get(target string) page { return b.do("GET", target, nil) }

// signIn opens a fresh login link.
func (b *browser) signIn() {
	b.e.t.Helper()
	u, _ := url.Parse(b.e.loginLink("?name=alice"))
	p := b.get(u.RequestURI())
	if p.code != http.StatusSeeOther || p.hdr.Get("Location") != "/ui/" {
		b.e.t.Fatalf("login link: %d %q", p.code, p.hdr.Get("Location"))
	}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the CSRF token of the page at target.
func (b *browser) csrf(target string) string {
	b.e.t.Helper()
	m := csrfRe.FindStringSubmatch(b.get(target).body)
	if m == nil {
		b.e.t.Fatalf("no csrf on %s", target)
	}
	return m[1]
}

// post submits form to target with the CSRF token of from.
func (b *browser) post(from, target string, form url.Values) page {
	b.e.t.Helper()
	form.Set("csrf", b.csrf(from))
	return b.do("POST", target, form)
}

var flashRe = regexp.MustCompile(`<p id="flash" class="flash( error)?" role="status">([^<]*)</p>`)

// flash follows a write's redirect and returns the flash line it shows.
func (b *browser) flash(p page) (msg string, isErr bool) {
	b.e.t.Helper()
	if p.code != http.StatusSeeOther {
		b.e.t.Fatalf("write answered %d: %s", p.code, p.body)
	}
	next := b.get(p.hdr.Get("Location"))
	m := flashRe.FindStringSubmatch(next.body)
	if m == nil {
		b.e.t.Fatalf("no #flash on %s", p.hdr.Get("Location"))
	}
	return m[2], m[1] != ""
}
