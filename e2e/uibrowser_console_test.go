package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// The web console in a real browser (issue 15), on a real 3-node cluster
// with the built-in PKI (HTTPS, the browser trusting the cluster CA and
// nothing else): every step is what an operator does with the mouse and
// the keyboard, checked against the DOM contract of the ui package (ids
// and data attributes) and against the real clients (go-cs-bouncer), with
// a screenshot per step in the artefact directory.

const (
	// uiLiveTimeout bounds the wait for a live (server-sent events) update
	// of an open page.
	uiLiveTimeout = 10 * time.Second
	// uiBanIP is the address banned through the console (TEST-NET-1).
	uiBanIP = "192.0.2.77"
)

// submitOK clicks sel (a link or a form's button) and fails the test
// unless the page it leads to is a 200, quoting that page.
func submitOK(t testing.TB, b *Browser, sel string) {
	t.Helper()
	if st := b.ClickAndLoad(sel); st != http.StatusOK {
		t.Fatalf("click %s: landed on HTTP %d at %s: %q", sel, st, b.Location(), b.Text("body"))
	}
}

// requireConsole skips the test when the binary under test has no web
// console (`halapi ui login`): the browser tests are written against the
// ui package's contract, which lands separately.
func requireConsole(t testing.TB) {
	t.Helper()
	if _, err := halapiCmd("ui", "login", "--help"); err != nil {
		t.Skipf("this halapi binary has no web console (`halapi ui login`): %v", err)
	}
}

// uiLogin runs `halapi ui login` on nd and returns the link it prints,
// checking that it is one https URL to nd's API address.
func uiLogin(t testing.TB, nd *ClusterNode, name string) string {
	t.Helper()

	out := strings.TrimSpace(nd.MustCLI("ui", "login", "--name", name))
	if strings.Contains(out, "\n") {
		t.Fatalf("ui login printed more than one line:\n%s", out)
	}
	u, err := url.Parse(out)
	if err != nil || u.Scheme != "https" || u.Host != nd.Addr || u.Path != "/ui/login" || u.Query().Get("token") == "" {
		t.Fatalf("ui login on %s printed %q, want https://%s/ui/login?token=...", nd.ID, out, nd.Addr)
	}
	return out
}

// signIn opens a login link in the browser and checks the session: the
// browser lands on the cluster page signed in as name, holding the
// halapi_ui cookie (HttpOnly, Secure, SameSite=Strict).
func signIn(t testing.TB, b *Browser, link, name string) {
	t.Helper()

	if st := b.Open(link); st != http.StatusOK {
		t.Fatalf("login link: landed on HTTP %d (%s)", st, b.Location())
	}
	if loc := b.Location(); !strings.HasSuffix(loc, "/ui/") {
		t.Fatalf("login link: landed on %s, want /ui/ (303)", loc)
	}
	if who := b.Text("#who"); !strings.Contains(who, name) {
		t.Fatalf("signed in as %q, want %q", who, name)
	}
	ctx, cancel := context.WithTimeout(b.ctx, browserStepTimeout)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{link}})
	if err != nil {
		t.Fatalf("read cookies: %v", err)
	}
	var found bool
	for _, c := range res.Cookies {
		if c.Name != "halapi_ui" {
			continue
		}
		found = true
		if !c.HTTPOnly || !c.Secure || c.SameSite != network.CookieSameSiteStrict {
			t.Errorf("session cookie: HttpOnly=%v Secure=%v SameSite=%q, want true, true, Strict", c.HTTPOnly, c.Secure, c.SameSite)
		}
	}
	if !found {
		t.Fatalf("no halapi_ui cookie after sign-in")
	}
}

// TestUIConsole drives the console of a 3-node secure cluster in headless
// Chromium: sign-in with a `halapi ui login` link (single use); the
// cluster page shows the three nodes and the leader; another site's form
// cannot post to the console; a ban added on the decisions page reaches a
// go-cs-bouncer streaming from another node, and its unban reaches it too;
// the page's live refresh keeps the message meant for the next page; the
// leader is SIGKILLed and the open cluster page shows the new leader
// without a reload (server-sent events); a certificate revoked on the
// certificates page is refused by the API; an enrollment token made there
// enrolls a bouncer; signing out ends the session; an admin certificate
// signs in (when `halapi cert issue admin` and the console's CertIdentity
// are there).
func TestUIConsole(t *testing.T) {
	requireConsole(t)
	chromiumBin(t)
	start := time.Now()
	sc := startSecureCluster(t, 3)
	t.Logf("cluster formed in %s", time.Since(start).Round(time.Millisecond))

	// The browser talks to a follower (it must survive the leader's
	// death), the bouncer streams from the other follower.
	leader := sc.Leader(sc.Node(1))
	followers := sc.Others(leader)
	view, other := followers[0], followers[1]
	t.Logf("leader %s, browser on %s, bouncer on %s", leader.ID, view.ID, other.ID)

	// A bouncer (API key, the firewall bouncers' setup) streaming from
	// the other follower.
	key := "uiconsolebouncerkey0123456789"
	addBouncer(t, other.Server, "fw-ui", key)
	sb := &csbouncer.StreamBouncer{
		APIKey:         key,
		APIUrl:         other.URL,
		CAPath:         sc.CAFile,
		TickerInterval: "200ms",
		UserAgent:      "e2e-ui-bouncer/v0.0.21",
	}
	if err := sb.Init(); err != nil {
		t.Fatalf("StreamBouncer.Init: %v", err)
	}
	stream, _ := runTrackedStream(t, "fw-ui stream bouncer on "+other.ID, sb)

	// A bouncer certificate, to be revoked from the certificates page.
	revokee := issueCert(t, leader, "bouncer", "fw-revokee", view.URL)
	revokeeFiles := bouncerFiles(t, revokee.Cfg)

	// Another site the operator visits while signed in (its own CA, also
	// trusted by the browser): a button posting a ban to the console.
	evil := newCrossSite(t, view)

	b := StartBrowser(t, TrustCA(sc.CAFile), TrustCA(evil.caFile))

	t.Run("sign-in", func(t *testing.T) {
		defer b.Bind(t)()
		link := uiLogin(t, view, "e2e-operator")
		signIn(t, b, link, "e2e-operator")
		b.Shot("signed-in")

		// The link is single use: another browser opening it again gets
		// the login page (401) and no session.
		b2 := StartBrowser(t, TrustCA(sc.CAFile), WithShotPrefix("reused-link"))
		if st := b2.Open(link); st != http.StatusUnauthorized {
			t.Errorf("login link opened a second time: HTTP %d (%s), want 401", st, b2.Location())
		}
		if b2.Count("#who") != 0 || b2.Count("#nav-decisions") != 0 {
			t.Errorf("login link opened a second time: signed in as %q", b2.Text("#who"))
		}
		b2.Shot("refused")
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("cluster", func(t *testing.T) {
		defer b.Bind(t)()
		b.WaitJS(uiLiveTimeout, "cluster page lists 3 members with the leader",
			fmt.Sprintf(`document.querySelectorAll("#members tr[data-node-id]").length === 3 && document.querySelector("#leader").textContent.trim() === %s`, jsString(leader.ID)),
			`document.querySelector("#cluster-live")?.innerText`)
		for _, nd := range sc.Nodes {
			role := b.Attr(fmt.Sprintf(`#members tr[data-node-id=%q]`, nd.ID), "data-role")
			want := "follower"
			if nd == leader {
				want = "leader"
			}
			if role != want {
				t.Errorf("member %s: data-role %q, want %q", nd.ID, role, want)
			}
		}
		b.Shot("cluster")
		if os.Getenv("HALAPI_UPDATE_SCREENSHOTS") == "1" {
			b.ShotTo(filepath.Join("..", "docs", "img", "console-cluster.png"), "main")
		}
	})

	t.Run("cross-site-post-refused", func(t *testing.T) {
		defer b.Bind(t)()
		b.Open(evil.url)
		st := b.ClickAndLoad("#go")
		if st != http.StatusForbidden {
			t.Errorf("a form on %s posting to the console: HTTP %d (%s), want 403", evil.url, st, b.Location())
		}
		b.Shot("cross-site-refused")
		if out := view.MustCLI("decisions", "list", "--ip", crossSiteIP, "-o", "json"); strings.Contains(out, crossSiteIP) {
			t.Errorf("the cross-site form added a decision:\n%s", out)
		}
		// back to the console, still signed in
		b.Open(view.URL + "ui/")
		if who := b.Text("#who"); !strings.Contains(who, "e2e-operator") {
			t.Fatalf("back on the console after the other site: signed in as %q", who)
		}
	})

	banned := t.Run("ban", func(t *testing.T) {
		defer b.Bind(t)()
		submitOK(t, b, "a#nav-decisions")
		b.WaitSelector(browserStepTimeout, "form#add-ban")
		b.Type(`form#add-ban input[name=value]`, uiBanIP)
		b.Type(`form#add-ban input[name=duration]`, "4h")
		b.Type(`form#add-ban input[name=reason]`, "e2e: added in the browser")
		if got := mustEval[string](b, `document.querySelector("form#add-ban [name=type]").value`); got != "ban" {
			t.Errorf("add-ban type defaults to %q, want ban", got)
		}
		submitOK(t, b, `form#add-ban button[type=submit]`)
		if f := b.Text("#flash"); f == "" || b.Attr("#flash", "class") != "flash" {
			t.Errorf("after the ban: #flash %q (class %q), want a success message", f, b.Attr("#flash", "class"))
		}
		row := fmt.Sprintf(`#decisions tr[data-value=%q]`, uiBanIP)
		b.WaitSelector(uiLiveTimeout, row)
		b.Shot("ban-added")
		stream.waitValues(t, convergeTimeout, map[string]bool{uiBanIP: true})
		t.Logf("the ban reached the bouncer on %s", other.ID)
	})

	t.Run("unban", func(t *testing.T) {
		defer b.Bind(t)()
		if !banned {
			t.Skip("no ban to lift: the ban step failed")
		}
		row := fmt.Sprintf(`#decisions tr[data-value=%q]`, uiBanIP)
		submitOK(t, b, row+` button.unban`)
		if f := b.Text("#flash"); f == "" || b.Attr("#flash", "class") != "flash" {
			t.Errorf("after the unban: #flash %q (class %q), want a success message", f, b.Attr("#flash", "class"))
		}
		b.WaitJS(uiLiveTimeout, "the unbanned row is gone", fmt.Sprintf(`document.querySelector(%s) === null`, jsString(row)), `location.href`)
		b.Shot("unbanned")
		stream.waitValues(t, convergeTimeout, map[string]bool{})
		if p := stream.problems(); len(p) > 0 {
			t.Errorf("bouncer: %v", p)
		}
	})

	// The page's own live refresh (an SSE update makes its script
	// re-fetch the page) must not eat the one-line message meant for the
	// page the browser loads after a write: a ban is posted from the page
	// (as the form does, not following the 303), the open page refreshes
	// itself with the new row, then the next page load shows the message.
	t.Run("flash-after-live-refresh", func(t *testing.T) {
		defer b.Bind(t)()
		const ip = "192.0.2.78"
		page := view.URL + "ui/decisions"
		b.Open(page)
		res := mustEval[string](b, fmt.Sprintf(`(async () => {
			const f = document.querySelector("form#add-ban");
			const fd = new FormData(f);
			fd.set("value", %s); fd.set("reason", "e2e: flash after a live refresh");
			const r = await fetch(f.action, {method: "POST", body: new URLSearchParams(fd), redirect: "manual"});
			return r.type === "opaqueredirect" ? "303" : r.status + " " + (await r.text());
		})()`, jsString(ip)))
		if res != "303" {
			t.Fatalf("POST form#add-ban from the page: %s, want a 303", res)
		}
		b.WaitSelector(uiLiveTimeout, fmt.Sprintf(`#decisions tr[data-value=%q]`, ip))
		b.Open(page)
		if f := b.Text("#flash"); !strings.Contains(f, ip) {
			t.Errorf("after a ban on %s and a live refresh of the open page, the next page shows #flash %q: the refresh consumed the message", ip, f)
		}
		b.Shot("flash-after-live-refresh")
	})

	t.Run("leader-killed", func(t *testing.T) {
		defer b.Bind(t)()
		submitOK(t, b, "a#nav-cluster")
		b.WaitJS(uiLiveTimeout, "cluster page shows the leader", fmt.Sprintf(`document.querySelector("#leader")?.textContent.trim() === %s`, jsString(leader.ID)), `document.querySelector("#leader")?.textContent`)
		// A mark on the window: a reload would lose it.
		mustEval[bool](b, `window.__e2eNoReload = true`)
		b.Shot("before-kill")
		killed := time.Now()
		leader.Kill()
		b.WaitJS(uiLiveTimeout, "the open cluster page shows a new leader, without a reload",
			fmt.Sprintf(`window.__e2eNoReload === true && (() => { const l = document.querySelector("#leader").textContent.trim(); return l !== "" && l !== %s })()`, jsString(leader.ID)),
			`(window.__e2eNoReload ? "" : "reloaded! ") + document.querySelector("#cluster-live")?.innerText`)
		newLeader := b.Text("#leader")
		t.Logf("new leader %s shown %s after the SIGKILL", newLeader, time.Since(killed).Round(time.Millisecond))
		if newLeader != view.ID && newLeader != other.ID {
			t.Errorf("page shows leader %q, want %s or %s", newLeader, view.ID, other.ID)
		}
		b.WaitJS(uiLiveTimeout, "the killed leader's row is no longer leader",
			fmt.Sprintf(`(document.querySelector(%s)?.dataset.role ?? "gone") !== "leader"`, jsString(fmt.Sprintf(`#members tr[data-node-id=%q]`, leader.ID))),
			`document.querySelector("#members")?.innerText`)
		b.Shot("new-leader")
	})

	t.Run("revoke", func(t *testing.T) {
		defer b.Bind(t)()
		lb := certLiveBouncer(t, revokeeFiles, other.URL)
		if code, _, err := liveStatus(lb, uiBanIP); code != http.StatusOK {
			t.Fatalf("fw-revokee before revocation: status %d (err %v)", code, err)
		}
		submitOK(t, b, "a#nav-certs")
		row := `#certs tr[data-name="fw-revokee"]`
		b.WaitSelector(browserStepTimeout, row+` button.revoke`)
		submitOK(t, b, row+` button.revoke`)
		if f := b.Text("#flash"); f == "" || b.Attr("#flash", "class") != "flash" {
			t.Errorf("after the revocation: #flash %q (class %q), want a success message", f, b.Attr("#flash", "class"))
		}
		b.WaitJS(uiLiveTimeout, "the certificate shows as revoked",
			fmt.Sprintf(`document.querySelector(%s)?.dataset.revoked === "true"`, jsString(row)), `document.querySelector("#certs")?.innerText`)
		b.Shot("revoked")
		waitFor(t, convergeTimeout, "the revoked certificate refused by the API on "+other.ID, func() (bool, string) {
			code, _, err := liveStatus(lb, uiBanIP)
			return code == http.StatusForbidden, fmt.Sprintf("open connection: status %d (err %v)", code, err)
		})
		if code, _, err := liveStatus(certLiveBouncer(t, revokeeFiles, view.URL), uiBanIP); code != http.StatusForbidden {
			t.Errorf("revoked fw-revokee on a new connection to %s: status %d (err %v), want 403", view.ID, code, err)
		}
	})

	// A one-time enrollment token made on the certificates page enrolls a
	// bouncer (`halapi agent enroll --no-agent`), whose certificate the API
	// then accepts; the token is shown once.
	t.Run("enrollment-token", func(t *testing.T) {
		defer b.Bind(t)()
		b.Open(view.URL + "ui/certs")
		b.Select(`form#new-token select[name=role]`, "bouncer")
		b.Type(`form#new-token input[name=name]`, "fw-enrolled")
		submitOK(t, b, `form#new-token button[type=submit]`)
		tok := b.Text("#token-output")
		if tok == "" {
			t.Fatalf("no #token-output after creating a bouncer token (#flash %q)", b.Text("#flash"))
		}
		b.Shot("enrollment-token")
		dir := filepath.Join(t.TempDir(), "fw-enrolled")
		if _, err := halapiCmd("agent", "enroll", "--no-agent", "--url", view.URL, "--token", tok, "--out", dir); err != nil {
			t.Fatalf("enroll with the page's token: %v", err)
		}
		lb := certLiveBouncer(t, bouncerFiles(t, filepath.Join(dir, "bouncer-tls.yaml")), other.URL)
		if code, _, err := liveStatus(lb, uiBanIP); code != http.StatusOK {
			t.Errorf("the enrolled bouncer's certificate on %s: status %d (err %v), want 200", other.ID, code, err)
		}
		b.Open(view.URL + "ui/certs")
		if b.Count("#token-output") != 0 {
			t.Errorf("the one-time token is shown again on the next load of the certificates page")
		}
		if b.Count(`#certs tr[data-name="fw-enrolled"]`) != 1 {
			t.Errorf("the enrolled bouncer's certificate is not listed on the certificates page")
		}
	})

	t.Run("sign-out", func(t *testing.T) {
		defer b.Bind(t)()
		b.Open(view.URL + "ui/")
		submitOK(t, b, "#logout")
		if b.Count("#who") != 0 {
			t.Fatalf("still signed in as %q after Sign out", b.Text("#who"))
		}
		if st := b.Open(view.URL + "ui/decisions"); st != http.StatusUnauthorized || b.Count("#decisions") != 0 {
			t.Errorf("/ui/decisions after sign-out: HTTP %d with the decisions table %v, want 401 and the login page", st, b.Count("#decisions") != 0)
		}
		b.Shot("signed-out")
	})

	t.Run("admin-certificate", func(t *testing.T) {
		uiAdminCertSignIn(t, sc, view)
	})

	if errs := b.ConsoleErrors(); len(errs) > 0 {
		t.Errorf("browser console errors (CSP violations, script errors):\n%s", strings.Join(errs, "\n"))
	}
	t.Logf("TestUIConsole took %s", time.Since(start).Round(time.Millisecond))
}

// uiAdminCertSignIn signs in with an admin certificate: `halapi cert issue
// admin NAME` writes a PKCS#12, the browser imports it, the login page
// offers #cert-signin, which signs in as that name.
func uiAdminCertSignIn(t *testing.T, sc *secureCluster, view *ClusterNode) {
	tmp := t.TempDir()
	dir, pwFile := filepath.Join(tmp, "admin"), filepath.Join(tmp, "p12-password")
	if err := os.WriteFile(pwFile, []byte("e2e-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := view.CLI("cert", "issue", "admin", "alice", "--out", dir, "-u", view.URL, "--p12-password-file", pwFile)
	if err != nil {
		t.Skipf("no admin certificate yet (uiaudit's `halapi cert issue admin NAME` writing a PKCS#12): %v", err)
	}
	p12s, _ := filepath.Glob(filepath.Join(dir, "*.p12"))
	if len(p12s) != 1 {
		t.Fatalf("cert issue admin alice: want one .p12 in %s, got %v\n%s", dir, p12s, out)
	}
	origin := strings.TrimSuffix(view.URL, "/")
	b := StartBrowser(t, TrustCA(sc.CAFile), WithClientCert(p12s[0], "e2e-pass", "alice", origin), WithShotPrefix("admin"))
	b.Open(origin + "/ui/login")
	if b.Count("#cert-signin") == 0 {
		t.Skipf("the login page offers no #cert-signin for an admin certificate: Config.CertIdentity not wired (lead, at merge)")
	}
	b.Shot("login-page")
	submitOK(t, b, "#cert-signin")
	if who := b.Text("#who"); !strings.Contains(who, "alice") {
		t.Fatalf("signed in with the admin certificate as %q, want alice", who)
	}
	b.Shot("signed-in")
}

// crossSiteIP is what the other site's form tries to ban.
const crossSiteIP = "198.51.100.66"

// crossSite is another HTTPS origin (same host, another port: same site,
// cross origin, so a SameSite=Strict cookie alone would not stop it)
// serving a page whose button posts a ban to the console.
type crossSite struct {
	url, caFile string
}

func newCrossSite(t testing.TB, target *ClusterNode) crossSite {
	t.Helper()

	ca := newTestCA(t, "another site's CA")
	caFile := filepath.Join(t.TempDir(), "other-ca.crt")
	writePEM(t, caFile, "CERTIFICATE", ca.cert.Raw)
	action := target.URL + "ui/decisions/add"
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html><head><title>another site</title></head><body><h1>Win a prize</h1>
<form method="post" action="%s"><input type="hidden" name="value" value="%s"><input type="hidden" name="duration" value="4h">
<input type="hidden" name="type" value="ban"><input type="hidden" name="reason" value="cross-site"><button id="go" type="submit">Claim</button></form></body></html>`,
			html.EscapeString(action), crossSiteIP)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, "127.0.0.1", false)}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return crossSite{url: srv.URL + "/", caFile: caFile}
}
