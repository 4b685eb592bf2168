package ui

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/capi"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/pki"
)

// addDecisions stores n ban decisions (one alert) on 10.x.y.z, scenario
// crowdsecurity/ssh-bf, through the FSM like a machine's alert would.
func (e *env) addDecisions(n int, scenario string) {
	e.t.Helper()
	now := time.Now().UnixNano()
	ds := make([]fsm.Decision, n)
	for i := range ds {
		v := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		ds[i] = fsm.Decision{UUID: fsm.UUID(uuid.New()), Origin: "crowdsec", Type: "ban", Scope: "Ip", Value: v,
			Scenario: scenario, Until: now + int64(4*time.Hour)}
	}
	a := fsm.Alert{UUID: uuid.NewString(), Scenario: scenario, Message: "test", EventsCount: 1, StartAt: now, StopAt: now,
		Source: fsm.Source{Scope: "Ip", Value: "10.0.0.0", IP: "10.0.0.0", Cn: "FR", AsNumber: "64500", AsName: "Example"}, MachineID: "m1"}
	d := &direct{f: e.f, index: e.f.AppliedIndex()}
	res, err := d.Apply(context.Background(), fsm.Command{Type: fsm.CmdAlertsCreate, Body: fsm.AlertsCreate{Alerts: []fsm.NewAlert{{Alert: a, Decisions: ds}}}})
	if err != nil || res.Err() != nil {
		e.t.Fatalf("add decisions: %v %v", err, res.Err())
	}
}

func activeValues(f *fsm.FSM, value string) []*fsm.Decision {
	return f.Decisions(&fsm.DecisionFilter{Value: value, IncludeSimulated: true}, time.Now())
}

func TestLoginLinkIsSingleUse(t *testing.T) {
	e := newEnv(t)
	link := e.loginLink("?name=alice&ttl=5m")
	if !strings.HasPrefix(link, "https://127.0.0.1:8443/ui/login?token=") {
		t.Fatalf("link %q", link)
	}
	u, _ := url.Parse(link)
	b := e.browser()
	p := b.get(u.RequestURI())
	if p.code != http.StatusSeeOther || p.hdr.Get("Location") != "/ui/" {
		t.Fatalf("first use: %d %q", p.code, p.hdr.Get("Location"))
	}
	ck := b.cookies[CookieName]
	if ck == nil || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/ui/" {
		t.Fatalf("session cookie %+v", ck)
	}
	if p := b.get("/ui/"); p.code != 200 || !strings.Contains(p.body, `<dd id="leader">n2</dd>`) || !strings.Contains(p.body, "link:alice") {
		t.Fatalf("cluster page after sign-in: %d\n%s", p.code, p.body)
	}
	// the same link again, from another browser: refused
	other := e.browser()
	p = other.get(u.RequestURI())
	if p.code != http.StatusUnauthorized || !strings.Contains(p.body, "already used") || other.cookies[CookieName] != nil {
		t.Fatalf("second use: %d %v\n%s", p.code, other.cookies, p.body)
	}
}

func TestLoginLinkExpires(t *testing.T) {
	e := newEnv(t)
	u, _ := url.Parse(e.loginLink("?ttl=1m"))
	e.advance(61 * time.Second)
	b := e.browser()
	if p := b.get(u.RequestURI()); p.code != http.StatusUnauthorized || b.cookies[CookieName] != nil {
		t.Fatalf("expired link: %d", p.code)
	}
}

func TestLoginLinkAdminRouteValidates(t *testing.T) {
	e := newEnv(t)
	for _, q := range []string{"?ttl=25h", "?ttl=-1m", "?ttl=abc", "?name=a%20b", "?name=" + strings.Repeat("x", 65)} {
		rec := httptest.NewRecorder()
		e.adminH.ServeHTTP(rec, httptest.NewRequest("POST", "/admin/v1/ui/login"+q, nil))
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"message"`) {
			t.Errorf("%s: %d %s", q, rec.Code, rec.Body)
		}
	}
}

func TestLoginTokensAreBounded(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxLoginTokens = 2 })
	first, _ := url.Parse(e.loginLink(""))
	e.advance(time.Second)
	second, _ := url.Parse(e.loginLink(""))
	e.advance(time.Second)
	third, _ := url.Parse(e.loginLink(""))
	if p := e.browser().get(first.RequestURI()); p.code != http.StatusUnauthorized {
		t.Fatalf("the oldest link should have been dropped: %d", p.code)
	}
	for _, u := range []*url.URL{second, third} {
		if p := e.browser().get(u.RequestURI()); p.code != http.StatusSeeOther {
			t.Fatalf("%s: %d", u, p.code)
		}
	}
	if n := len(e.c.tokens.m); n != 0 {
		t.Fatalf("%d tokens left", n)
	}
}

func TestUnauthenticatedGetsLoginOnly(t *testing.T) {
	e := newEnv(t)
	e.addDecisions(3, "crowdsecurity/secret-scenario")
	for _, b := range []*browser{e.browser(), func() *browser {
		b := e.browser()
		b.cookies[CookieName] = &http.Cookie{Name: CookieName, Value: "forged"}
		return b
	}()} {
		for _, path := range []string{"/ui/", "/ui/cluster", "/ui/decisions", "/ui/alerts", "/ui/machines", "/ui/bouncers",
			"/ui/certs", "/ui/capi", "/ui/audit", "/ui/nope"} {
			p := b.get(path)
			if p.code != http.StatusUnauthorized || !strings.Contains(p.body, "halapi ui login") ||
				strings.Contains(p.body, "secret-scenario") || strings.Contains(p.body, `id="nav-decisions"`) {
				t.Errorf("%s: %d\n%s", path, p.code, p.body)
			}
		}
		for _, path := range []string{"/ui/decisions/add", "/ui/decisions/unban", "/ui/machines/delete", "/ui/certs/revoke", "/ui/certs/token"} {
			if p := b.do("POST", path, url.Values{"value": {"1.2.3.4"}, "id": {"1"}, "csrf": {"x"}}); p.code != http.StatusUnauthorized {
				t.Errorf("POST %s: %d", path, p.code)
			}
		}
		if p := b.get("/ui/events"); p.code != http.StatusUnauthorized || strings.Contains(p.body, "event:") {
			t.Errorf("events: %d %q", p.code, p.body)
		}
	}
	if ds := activeValues(e.f, "1.2.3.4"); len(ds) != 0 {
		t.Fatalf("an unauthenticated POST wrote: %v", ds)
	}
	// assets are public (the login page needs them) and hold nothing;
	// no directory listing
	if p := e.browser().get("/ui/static/app.js?v=" + e.c.assets); p.code != 200 || !strings.Contains(p.body, "EventSource") {
		t.Fatalf("static: %d", p.code)
	}
	if p := e.browser().get("/ui/static/"); p.code != http.StatusNotFound || strings.Contains(p.body, "app.js") {
		t.Fatalf("static dir: %d %s", p.code, p.body)
	}
	if p := e.browser().get("/ui/login"); !strings.Contains(p.body, `src="/ui/static/app.js?v=`+e.c.assets+`"`) {
		t.Fatal("asset URL without its version")
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn()
	for _, path := range []string{"/ui/", "/ui/login", "/ui/decisions"} {
		p := b.get(path)
		csp := p.hdr.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") ||
			!strings.Contains(csp, "frame-ancestors 'none'") || p.hdr.Get("X-Frame-Options") != "DENY" ||
			p.hdr.Get("Referrer-Policy") != "same-origin" || p.hdr.Get("Cache-Control") != "no-store" {
			t.Errorf("%s headers: %v", path, p.hdr)
		}
		// nothing from another origin in the markup
		if regexp.MustCompile(`(src|href)="(https?:)?//`).MatchString(p.body) {
			t.Errorf("%s refers to another origin", path)
		}
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.browser(), e.browser()
	alice.signIn()
	bob.signIn()
	form := func(csrf string) url.Values {
		return url.Values{"value": {"192.0.2.7"}, "duration": {"1h"}, "csrf": {csrf}}
	}
	bobs := bob.csrf("/ui/decisions")
	for name, v := range map[string]url.Values{"none": {"value": {"192.0.2.7"}}, "wrong": form("nope"), "another session's": form(bobs)} {
		if p := alice.do("POST", "/ui/decisions/add", v); p.code != http.StatusForbidden {
			t.Errorf("%s CSRF token: %d", name, p.code)
		}
	}
	// right token, foreign Origin
	req := httptest.NewRequest("POST", "/ui/decisions/add", strings.NewReader(form(alice.csrf("/ui/decisions")).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	req.AddCookie(alice.cookies[CookieName])
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("foreign origin: %d", rec.Code)
	}
	if ds := activeValues(e.f, "192.0.2.7"); len(ds) != 0 {
		t.Fatalf("refused POSTs wrote %d decisions", len(ds))
	}
	if len(e.auditLog()) != 0 {
		t.Fatalf("audit: %v", e.auditLog())
	}
	// and the right one works
	if msg, isErr := alice.flash(alice.post("/ui/decisions", "/ui/decisions/add", url.Values{"value": {"192.0.2.7"}})); isErr {
		t.Fatal(msg)
	}
}

func TestBodyIsBounded(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn()
	csrf := b.csrf("/ui/decisions")
	big := url.Values{"csrf": {csrf}, "value": {strings.Repeat("a", 70<<10)}}
	if p := b.do("POST", "/ui/decisions/add", big); p.code != http.StatusBadRequest {
		t.Fatalf("70 KiB form: %d", p.code)
	}
	many := url.Values{"csrf": {csrf}}
	for i := range 1200 {
		many.Add("id", fmt.Sprint(i))
	}
	if p := b.do("POST", "/ui/decisions/unban", many); p.code != http.StatusBadRequest {
		t.Fatalf("1200 values: %d", p.code)
	}
}

func TestSessionsExpireAndLogout(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn()
	if p := b.get("/ui/decisions"); p.code != 200 {
		t.Fatal(p.code)
	}
	e.advance(DefaultSessionTTL + time.Second)
	if p := b.get("/ui/decisions"); p.code != http.StatusUnauthorized {
		t.Fatalf("after 8 h: %d", p.code)
	}
	b2 := e.browser()
	b2.signIn()
	saved := *b2.cookies[CookieName]
	p := b2.post("/ui/", "/ui/logout", url.Values{})
	if p.code != http.StatusSeeOther || p.hdr.Get("Location") != "/ui/login" {
		t.Fatalf("logout: %d", p.code)
	}
	// the old cookie no longer opens anything
	b2.cookies[CookieName] = &saved
	if p := b2.get("/ui/"); p.code != http.StatusUnauthorized {
		t.Fatalf("after logout: %d", p.code)
	}
}

func TestSessionsAreBounded(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxSessions = 2 })
	var bs []*browser
	for range 3 {
		b := e.browser()
		b.signIn()
		e.advance(time.Second)
		bs = append(bs, b)
	}
	if n := e.c.sessions.count(); n != 2 {
		t.Fatalf("%d sessions", n)
	}
	if p := bs[0].get("/ui/"); p.code != http.StatusUnauthorized {
		t.Fatalf("oldest session kept: %d", p.code)
	}
	if p := bs[2].get("/ui/"); p.code != 200 {
		t.Fatalf("newest session: %d", p.code)
	}
}

// fakeCert is a connection state with a client certificate of cn.
func fakeCert(cn string) *tls.ConnectionState {
	c := &x509.Certificate{}
	c.Subject.CommonName = cn
	return &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
}

func TestCertificateSignIn(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.CertIdentity = func(cs *tls.ConnectionState) (string, error) {
			if cn := cs.PeerCertificates[0].Subject.CommonName; cn == "alice" {
				return cn, nil
			}
			return "", errors.New("not an admin")
		}
	})
	do := func(cs *tls.ConnectionState, method, target string, form url.Values, cookies ...*http.Cookie) *httptest.ResponseRecorder {
		var req *http.Request
		if form != nil {
			req = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		} else {
			req = httptest.NewRequest(method, target, nil)
		}
		req.TLS = cs
		for _, c := range cookies {
			req.AddCookie(c)
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		return rec
	}
	// a refused certificate, or none: no button
	for _, cs := range []*tls.ConnectionState{nil, fakeCert("mallory")} {
		if rec := do(cs, "GET", "/ui/login", nil); strings.Contains(rec.Body.String(), "cert-signin") {
			t.Fatalf("button shown for %v", cs)
		}
	}
	rec := do(fakeCert("alice"), "GET", "/ui/login", nil)
	if !strings.Contains(rec.Body.String(), `id="cert-signin"`) {
		t.Fatalf("no #cert-signin:\n%s", rec.Body)
	}
	var pre *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == preCookie {
			pre = c
		}
	}
	csrf := csrfRe.FindStringSubmatch(rec.Body.String())[1]
	// without the login page's cookie: refused
	if rec := do(fakeCert("alice"), "POST", "/ui/login/cert", url.Values{"csrf": {csrf}}); rec.Code != http.StatusForbidden {
		t.Fatalf("no pre-cookie: %d", rec.Code)
	}
	// a refused certificate with a valid form: refused
	if rec := do(fakeCert("mallory"), "POST", "/ui/login/cert", url.Values{"csrf": {csrf}}, pre); rec.Code != http.StatusUnauthorized {
		t.Fatalf("mallory: %d", rec.Code)
	}
	rec = do(fakeCert("alice"), "POST", "/ui/login/cert", url.Values{"csrf": {csrf}}, pre)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("cert sign-in: %d %s", rec.Code, rec.Body)
	}
	var sess *http.Cookie
	for _, c := range rec.Result().Cookies() {
		if c.Name == CookieName {
			sess = c
		}
	}
	if rec := do(nil, "GET", "/ui/", nil, sess); rec.Code != 200 || !strings.Contains(rec.Body.String(), "cert:alice") {
		t.Fatalf("after cert sign-in: %d", rec.Code)
	}
}

func TestAddBanAndUnban(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn()
	msg, isErr := b.flash(b.post("/ui/decisions", "/ui/decisions/add", url.Values{"value": {"192.0.2.10"}, "duration": {"2h"}, "reason": {"manual test"}, "type": {"ban"}}))
	if isErr || !strings.Contains(msg, "192.0.2.10") {
		t.Fatalf("flash %q", msg)
	}
	ds := activeValues(e.f, "192.0.2.10")
	if len(ds) != 1 || ds[0].Scenario != "manual test" || ds[0].Type != "ban" || ds[0].Origin != "cscli" {
		t.Fatalf("decision in the FSM: %+v", ds)
	}
	if rem := time.Until(time.Unix(0, ds[0].Until)); rem < 119*time.Minute || rem > 2*time.Hour {
		t.Fatalf("duration: %s", rem)
	}
	p := b.get("/ui/decisions")
	row := fmt.Sprintf(`<tr data-decision-id="%d" data-value="192.0.2.10">`, ds[0].ID)
	if !strings.Contains(p.body, row) || !strings.Contains(p.body, `class="unban"`) {
		t.Fatalf("row not on the page:\n%s", p.body)
	}
	if a := e.auditLog(); len(a) != 1 || a[0].who != "link:alice" || a[0].action != "decision.add" || a[0].target != "192.0.2.10" {
		t.Fatalf("audit %+v", a)
	}
	// an invalid ban: an error flash, nothing written
	msg, isErr = b.flash(b.post("/ui/decisions", "/ui/decisions/add", url.Values{"value": {"not-an-ip"}, "duration": {"1h"}}))
	if !isErr || !strings.Contains(msg, "invalid") {
		t.Fatalf("bad value flash %q %v", msg, isErr)
	}
	msg, isErr = b.flash(b.post("/ui/decisions", "/ui/decisions/add", url.Values{"value": {"192.0.2.11"}, "duration": {"forever"}}))
	if !isErr || len(activeValues(e.f, "192.0.2.11")) != 0 {
		t.Fatalf("bad duration flash %q %v", msg, isErr)
	}
	// unban one
	msg, isErr = b.flash(b.post("/ui/decisions", "/ui/decisions/unban", url.Values{"id": {fmt.Sprint(ds[0].ID)}}))
	if isErr || !strings.Contains(msg, "Unbanned 1") {
		t.Fatalf("unban flash %q", msg)
	}
	if left := activeValues(e.f, "192.0.2.10"); len(left) != 0 {
		t.Fatalf("still active: %+v", left)
	}
	if p := b.get("/ui/decisions"); strings.Contains(p.body, `data-value="192.0.2.10"`) {
		t.Fatal("unbanned row still listed")
	}
	// unban a selection: two of three, the third stays
	e.addDecisions(3, "crowdsecurity/ssh-bf")
	all := e.f.Decisions(&fsm.DecisionFilter{ScenariosContaining: []string{"ssh-bf"}}, time.Now())
	if len(all) != 3 {
		t.Fatal(len(all))
	}
	msg, isErr = b.flash(b.post("/ui/decisions", "/ui/decisions/unban", url.Values{"id": {fmt.Sprint(all[0].ID), fmt.Sprint(all[1].ID)}}))
	if isErr || !strings.Contains(msg, "Unbanned 2") {
		t.Fatalf("selection flash %q", msg)
	}
	left := e.f.Decisions(&fsm.DecisionFilter{ScenariosContaining: []string{"ssh-bf"}}, time.Now())
	if len(left) != 1 || left[0].ID != all[2].ID {
		t.Fatalf("left %+v", left)
	}
	// an ID already gone
	msg, _ = b.flash(b.post("/ui/decisions", "/ui/decisions/unban", url.Values{"id": {fmt.Sprint(all[0].ID)}}))
	if !strings.Contains(msg, "already gone") {
		t.Fatalf("gone flash %q", msg)
	}
	if a := e.auditLog(); len(a) != 4 || a[3].target != all[1].Value || a[1].action != "decision.delete" || a[1].target != "192.0.2.10" {
		t.Fatalf("audit %+v", a)
	}
}

func TestUnbanOneKeepsOtherDecisionsOnTheValue(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn()
	for _, typ := range []string{"ban", "captcha"} {
		if _, isErr := b.flash(b.post("/ui/decisions", "/ui/decisions/add", url.Values{"value": {"198.51.100.1"}, "type": {typ}})); isErr {
			t.Fatal(typ)
		}
	}
	ds := activeValues(e.f, "198.51.100.1")
	if len(ds) != 2 {
		t.Fatal(len(ds))
	}
	b.flash(b.post("/ui/decisions", "/ui/decisions/unban", url.Values{"id": {fmt.Sprint(ds[0].ID)}}))
	left := activeValues(e.f, "198.51.100.1")
	if len(left) != 1 || left[0].ID != ds[1].ID {
		t.Fatalf("left %+v", left)
	}
}

var rowRe = regexp.MustCompile(`<tr data-decision-id="(\d+)" data-value="([^"]+)">`)

func TestDecisionsSearchAndPages(t *testing.T) {
	e := newEnv(t)
	e.addDecisions(250, "crowdsecurity/http-probing")
	b := e.browser()
	b.signIn()
	p := b.get("/ui/decisions")
	if n := len(rowRe.FindAllString(p.body, -1)); n != PageSize {
		t.Fatalf("page 1: %d rows", n)
	}
	if !strings.Contains(p.body, `id="next-page" href="/ui/decisions?page=2"`) || strings.Contains(p.body, `id="prev-page"`) {
		t.Fatal("page 1 links")
	}
	if !strings.Contains(p.body, `<span id="active-count">250</span>`) {
		t.Fatal("active count")
	}
	p = b.get("/ui/decisions?page=3")
	if n := len(rowRe.FindAllString(p.body, -1)); n != 50 || strings.Contains(p.body, `id="next-page"`) || !strings.Contains(p.body, `id="prev-page"`) {
		t.Fatalf("page 3: %d rows", n)
	}
	first := rowRe.FindStringSubmatch(b.get("/ui/decisions?page=2").body)
	if first[2] != "10.0.0.100" {
		t.Fatalf("page 2 starts with %s", first[2])
	}
	for q, want := range map[string]int{
		"10.0.0.7":           1,
		"10.0.0.0/28":        16,
		"http-probing":       100,
		"HTTP-PROBING":       100,
		"crowdsec":           100,
		"origin:cscli":       0,
		"ssh-bf":             0,
		"value:10.0.0.9":     1,
		"<script>x</script>": 0,
	} {
		p := b.get("/ui/decisions?q=" + url.QueryEscape(q))
		if n := len(rowRe.FindAllString(p.body, -1)); n != want || p.code != 200 {
			t.Errorf("search %q: %d rows, want %d", q, n, want)
		}
		if strings.Contains(p.body, "<script>x") {
			t.Error("search text not escaped")
		}
	}
	// the pager keeps the search
	if p := b.get("/ui/decisions?q=http-probing"); !strings.Contains(p.body, `href="/ui/decisions?q=http-probing&amp;page=2"`) {
		t.Fatal("pager loses the search")
	}
}

func TestCountryColumn(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Country = func(ip string) string {
			if ip == "10.0.0.1" {
				return "DE"
			}
			return ""
		}
	})
	e.addDecisions(2, "x/y")
	b := e.browser()
	b.signIn()
	p := b.get("/ui/decisions")
	if !strings.Contains(p.body, "<th>Country</th>") || !strings.Contains(p.body, "<td>DE</td>") {
		t.Fatal("no country")
	}
	e2 := newEnv(t)
	b2 := e2.browser()
	b2.signIn()
	if strings.Contains(b2.get("/ui/decisions").body, "<th>Country</th>") {
		t.Fatal("country column without GeoIP")
	}
}

func TestClusterPage(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn()
	p := b.get("/ui/cluster")
	for _, want := range []string{`<dd id="leader">n2</dd>`, `<tr data-node-id="n1" data-role="follower" class="self">`,
		`<tr data-node-id="n2" data-role="leader">`, `<tr data-node-id="n3" data-role="unreachable">`, `<td>127.0.0.1:7002</td><td>127.0.0.1:8002</td>`, `id="health" class="ok"`} {
		if !strings.Contains(p.body, want) {
			t.Errorf("missing %s", want)
		}
	}
	for _, id := range []string{"nav-cluster", "nav-decisions", "nav-alerts", "nav-machines", "nav-bouncers", "nav-certs", "nav-capi"} {
		if !strings.Contains(p.body, `<a id="`+id+`"`) {
			t.Errorf("missing a#%s", id)
		}
	}
	e.cl.setLeader("n3", 4)
	p = b.get("/ui/")
	if !strings.Contains(p.body, `<dd id="leader">n3</dd>`) || !strings.Contains(p.body, `<tr data-node-id="n3" data-role="leader">`) ||
		!strings.Contains(p.body, "term 4, n3 elected") {
		t.Fatalf("after the election:\n%s", p.body)
	}
	e.cl.setLeader("", 5)
	if p := b.get("/ui/"); !strings.Contains(p.body, `id="health" class="bad"`) {
		t.Fatal("no-leader health")
	}
}

func TestAlertsPage(t *testing.T) {
	e := newEnv(t)
	e.addDecisions(2, "crowdsecurity/ssh-bf")
	b := e.browser()
	b.signIn()
	p := b.get("/ui/alerts")
	if strings.Contains(p.body, "more-alerts") {
		t.Fatal("a 'more' link with one alert")
	}
	for range 3 {
		e.addDecisions(1, "crowdsecurity/other")
	}
	if p := b.get("/ui/alerts?limit=2"); strings.Count(p.body, "<tr data-alert-id=") != 2 || !strings.Contains(p.body, `id="more-alerts" href="/ui/alerts?limit=4"`) {
		t.Fatalf("limit 2:\n%s", p.body)
	}
	for _, want := range []string{"crowdsecurity/ssh-bf", `<a href="/ui/decisions?q=10.0.0.0" title="decisions on this value">Ip:10.0.0.0</a>`, "<td>FR</td>", "64500 Example", "ban Ip:10.0.0.1 (crowdsec, 4h0m0s)", "<td>m1</td>"} {
		if !strings.Contains(html.UnescapeString(p.body), want) {
			t.Errorf("missing %q", want)
		}
	}
}

func TestMachinesAndBouncersPages(t *testing.T) {
	e := newEnv(t)
	d := &direct{f: e.f, index: e.f.AppliedIndex()}
	apply := func(typ fsm.CmdType, body any) {
		t.Helper()
		d.index = e.f.AppliedIndex()
		if res, err := d.Apply(context.Background(), fsm.Command{Type: typ, Body: body}); err != nil || res.Err() != nil {
			t.Fatal(err, res.Err())
		}
	}
	apply(fsm.CmdMachineCreate, fsm.MachineCreate{Machine: fsm.Machine{ID: "pending-agent", PasswordHash: []byte("x"), AuthType: fsm.AuthPassword, Version: "v1.7.6"}})
	apply(fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: fsm.Bouncer{Name: "fw1", KeyHash: "abc", AuthType: fsm.AuthAPIKey}})
	b := e.browser()
	b.signIn()
	p := b.get("/ui/machines")
	if !strings.Contains(p.body, `<tr data-machine-id="pending-agent" data-validated="false">`) || !strings.Contains(p.body, "v1.7.6") ||
		!strings.Contains(p.body, `class="validate"`) {
		t.Fatalf("machines page:\n%s", p.body)
	}
	if msg, isErr := b.flash(b.post("/ui/machines", "/ui/machines/validate", url.Values{"id": {"pending-agent"}})); isErr {
		t.Fatal(msg)
	}
	if m := e.f.Machine("pending-agent"); m == nil || !m.Validated {
		t.Fatal("not validated in the FSM")
	}
	if msg, isErr := b.flash(b.post("/ui/machines", "/ui/machines/delete", url.Values{"id": {"pending-agent"}})); isErr {
		t.Fatal(msg)
	}
	if e.f.Machine("pending-agent") != nil {
		t.Fatal("not deleted")
	}
	if msg, isErr := b.flash(b.post("/ui/machines", "/ui/machines/delete", url.Values{"id": {"pending-agent"}})); !isErr || !strings.Contains(msg, "not found") {
		t.Fatalf("second delete: %q", msg)
	}
	apply(fsm.CmdTouch, fsm.Touch{Bouncers: []fsm.BouncerTouch{{Name: "fw1", LastPull: time.Now().UnixNano(), Node: "n3"}}})
	p = b.get("/ui/bouncers")
	if !strings.Contains(p.body, `<tr data-bouncer-name="fw1">`) || !strings.Contains(p.body, "api-key") ||
		!strings.Contains(p.body, `<small class="pull-node">on n3</small>`) {
		t.Fatalf("bouncers page:\n%s", p.body)
	}
	if msg, isErr := b.flash(b.post("/ui/bouncers", "/ui/bouncers/delete", url.Values{"name": {"fw1"}})); isErr {
		t.Fatal(msg)
	}
	if e.f.Bouncer("fw1") != nil {
		t.Fatal("bouncer not deleted")
	}
	var actions []string
	for _, a := range e.auditLog() {
		actions = append(actions, a.action+" "+a.target)
	}
	if got := strings.Join(actions, ","); got != "machine.validate pending-agent,machine.delete pending-agent,bouncer.delete fw1" {
		t.Fatalf("audit %s", got)
	}
}

var certRowRe = regexp.MustCompile(`<tr data-serial="([^"]+)" data-name="([^"]+)" data-revoked="(true|false)">`)

func TestCertsPage(t *testing.T) {
	e := newEnv(t)
	_, _, serial, err := e.ca.IssueClient(pki.RoleBouncer, "fw-7")
	if err != nil {
		t.Fatal(err)
	}
	b := e.browser()
	b.signIn()
	p := b.get("/ui/certs")
	rows := certRowRe.FindAllStringSubmatch(p.body, -1)
	found := false
	for _, r := range rows {
		if r[2] == "fw-7" && r[1] == serial && r[3] == "false" {
			found = true
		}
	}
	if !found || !strings.Contains(p.body, `class="revoke"`) || !strings.Contains(p.body, `id="new-token"`) {
		t.Fatalf("certs page rows %v", rows)
	}
	if msg, isErr := b.flash(b.post("/ui/certs", "/ui/certs/revoke", url.Values{"serial": {serial}})); isErr {
		t.Fatal(msg)
	}
	if !pki.IsRevokedIn(e.f, serial) {
		t.Fatal("not revoked in the FSM")
	}
	if p := b.get("/ui/certs"); !strings.Contains(p.body, fmt.Sprintf(`data-serial="%s" data-name="fw-7" data-revoked="true"`, serial)) {
		t.Fatal("not shown revoked")
	}
	// a one-time token, shown once
	w := b.post("/ui/certs", "/ui/certs/token", url.Values{"role": {"agent"}, "name": {"web-3"}})
	if w.code != http.StatusSeeOther {
		t.Fatal(w.code)
	}
	p = b.get("/ui/certs")
	m := regexp.MustCompile(`<pre id="token-output">([^<]+)</pre>`).FindStringSubmatch(p.body)
	if m == nil || len(m[1]) < 20 {
		t.Fatalf("no token:\n%s", p.body)
	}
	if p := b.get("/ui/certs"); strings.Contains(p.body, "token-output") {
		t.Fatal("the token is shown twice")
	}
	msg, isErr := b.flash(b.post("/ui/certs", "/ui/certs/token", url.Values{"role": {"root"}, "name": {"x"}}))
	if !isErr || !strings.Contains(msg, "agent or bouncer") {
		t.Fatalf("bad role %q", msg)
	}
	msg, isErr = b.flash(b.post("/ui/certs", "/ui/certs/token", url.Values{"role": {"agent"}}))
	if !isErr || !strings.Contains(msg, "name") {
		t.Fatalf("no name %q", msg)
	}
	for _, a := range e.auditLog() {
		if strings.Contains(a.detail+a.target, m[1]) {
			t.Fatal("the token reached the audit trail")
		}
	}
}

func TestCAPIPage(t *testing.T) {
	capiSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	defer capiSrv.Close()
	e := newEnv(t)
	now := time.Now()
	st := capi.StatusView{Enabled: true, State: "running", Active: true, URL: capiSrv.URL + "/", Login: "abc", Registered: true,
		Enrolled: true, Subscription: "COMMUNITY", LastPull: &now, LastPullNew: 12, Decisions: map[string]int{"CAPI": 12, "lists:firehol": 3},
		Blocklists: []capi.BlocklistStatus{{Name: "firehol", Count: 3, LastPull: now.Format(time.RFC3339)}}, ConsoleOptions: []string{"custom"}}
	e.c.cfg.Admin = admin.Handler(nil, func(r *mux.Router) {
		r.HandleFunc("/capi/status", func(w http.ResponseWriter, _ *http.Request) { admin.WriteJSON(w, 200, st) })
	})
	b := e.browser()
	b.signIn()
	p := b.get("/ui/capi")
	for _, want := range []string{`id="capi-state">running`, "enrolled (COMMUNITY)", "<td>lists:firehol</td><td>3</td>", "<td>firehol</td><td>3</td>", "+12"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("missing %q", want)
		}
	}
	msg, isErr := b.flash(b.post("/ui/capi", "/ui/capi/test", url.Values{}))
	if isErr || !strings.Contains(msg, "HTTP 418") {
		t.Fatalf("connectivity test: %q", msg)
	}
	st.URL = "http://127.0.0.1:1/"
	msg, isErr = b.flash(b.post("/ui/capi", "/ui/capi/test", url.Values{}))
	if !isErr || !strings.Contains(msg, "cannot reach") {
		t.Fatalf("unreachable: %q", msg)
	}
}

func TestAuditPage(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.AuditLog = func(limit int) []AuditEntry {
			return []AuditEntry{{Time: time.Now(), Node: "n2", Who: "cert:bob", Action: "decision.delete", Target: "192.0.2.1"}}
		}
	})
	b := e.browser()
	b.signIn()
	p := b.get("/ui/audit")
	if !strings.Contains(p.body, `id="nav-audit"`) || !strings.Contains(p.body, "<td>cert:bob</td>") {
		t.Fatalf("audit page:\n%s", p.body)
	}
	e2 := newEnv(t)
	b2 := e2.browser()
	b2.signIn()
	if strings.Contains(b2.get("/ui/").body, "nav-audit") {
		t.Fatal("audit link without an audit log")
	}
}

func TestNoSecretInLogs(t *testing.T) {
	var logs bytes.Buffer
	e := newEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	link := e.loginLink("?name=alice")
	u, _ := url.Parse(link)
	tok := u.Query().Get("token")
	b := e.browser()
	if p := b.get(u.RequestURI()); p.code != http.StatusSeeOther {
		t.Fatal(p.code)
	}
	b.get(u.RequestURI()) // refused reuse is logged too
	b.post("/ui/certs", "/ui/certs/token", url.Values{"role": {"bouncer"}, "name": {"fw"}})
	m := regexp.MustCompile(`<pre id="token-output">([^<]+)</pre>`).FindStringSubmatch(b.get("/ui/certs").body)
	if m == nil {
		t.Fatal("no enrollment token")
	}
	b.flash(b.post("/ui/decisions", "/ui/decisions/add", url.Values{"value": {"192.0.2.99"}}))
	out := logs.String()
	for name, secret := range map[string]string{"login token": tok, "enrollment token": m[1], "session cookie": b.cookies[CookieName].Value, "csrf": b.csrf("/ui/")} {
		if strings.Contains(out, secret) {
			t.Errorf("the %s is in the log", name)
		}
	}
	for _, want := range []string{"ui sign-in", "who=link:alice", "action=decision.add", "target=192.0.2.99", "action=cert.token"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// sse reads server-sent events from a stream.
type sse struct{ r *bufio.Reader }

func (s *sse) next(t *testing.T) Event {
	t.Helper()
	var data string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "data: ") {
			data = strings.TrimPrefix(line, "data: ")
		}
		if line == "" && data != "" {
			var ev Event
			if err := json.Unmarshal([]byte(data), &ev); err != nil {
				t.Fatal(err)
			}
			return ev
		}
	}
}

func TestEventsFollowTheAppliedIndexAndTheLeader(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxEventClients = 2 })
	srv := httptest.NewServer(e.h)
	defer srv.Close()
	b := e.browser()
	b.signIn()
	open := func() *http.Response {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/ui/events", nil)
		req.AddCookie(b.cookies[CookieName])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := open()
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sse{r: bufio.NewReader(resp.Body)}
	ev := s.next(t)
	if ev.Leader != "n2" || ev.Applied != e.f.AppliedIndex() {
		t.Fatalf("first event %+v", ev)
	}
	// a second stream, opened while the watcher runs, gets the current
	// state at once
	r2 := open()
	if r2.StatusCode != 200 {
		t.Fatalf("second stream: %d", r2.StatusCode)
	}
	if ev2 := (&sse{r: bufio.NewReader(r2.Body)}).next(t); ev2.Leader != "n2" || ev2.Applied != e.f.AppliedIndex() {
		t.Fatalf("second stream's first event %+v", ev2)
	}
	// a third beyond the bound: 503
	if r3 := open(); r3.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third stream: %d", r3.StatusCode)
	} else {
		r3.Body.Close()
	}
	r2.Body.Close()
	e.addDecisions(1, "x/y")
	want := e.f.AppliedIndex()
	for ev.Applied < want {
		ev = s.next(t)
	}
	e.cl.setLeader("n3", 9)
	for ev.Leader != "n3" {
		ev = s.next(t)
	}
	if ev.Term != 9 {
		t.Fatalf("event %+v", ev)
	}
	// signing out ends the stream at its next event
	b.post("/ui/", "/ui/logout", url.Values{})
	e.addDecisions(1, "x/z")
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s.r)
		done <- err
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived the session")
	}
	// a closed stream frees its place, and the watcher stops
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for e.c.hub.count() != 0 || e.c.hub.isRunning() {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams left after the browser went away", e.c.hub.count())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLiveRefreshLeavesTheFlashAndTokenAlone(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.signIn()
	w := b.post("/ui/certs", "/ui/certs/token", url.Values{"role": {"bouncer"}, "name": {"fw"}})
	if w.code != http.StatusSeeOther {
		t.Fatal(w.code)
	}
	// the page script's refresh, racing the navigation
	req := httptest.NewRequest("GET", "/ui/certs", nil)
	req.Header.Set("X-Halapi-Live", "1")
	req.AddCookie(b.cookies[CookieName])
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != 200 || strings.Contains(rec.Body.String(), "token-output") || strings.Contains(rec.Body.String(), `id="flash"`) {
		t.Fatalf("the live refresh took the one-time token or the flash")
	}
	p := b.get("/ui/certs")
	if !strings.Contains(p.body, `<pre id="token-output">`) || !strings.Contains(p.body, `id="flash"`) {
		t.Fatal("the navigation lost the token or the flash")
	}
}
