package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The web console (package ui) on a real three-node cluster: sign in on
// one node with `halapi ui login`, add a ban on the page and see a
// bouncer of another node get it, unban it, then kill the leader and see
// the cluster page and the live event stream name the new one.

const uiBase = 15 // e2e address base of the ui tests

type uiBrowser struct {
	t    *testing.T
	base string // http://host:port
	c    *http.Client
}

func newUIBrowser(t *testing.T, base string) *uiBrowser {
	jar, _ := cookiejar.New(nil)
	return &uiBrowser{t: t, base: strings.TrimSuffix(base, "/"), c: &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (b *uiBrowser) do(method, path string, form url.Values) (int, string, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	u := path
	if !strings.HasPrefix(u, "http") {
		u = b.base + path
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header.Get("Location")
}

var uiCSRF = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// post submits form with the CSRF token of the page from, follows the
// redirect and returns the page with its flash line.
func (b *uiBrowser) post(from, to string, form url.Values) string {
	b.t.Helper()
	_, page, _ := b.do("GET", from, nil)
	m := uiCSRF.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("no CSRF token on %s", from)
	}
	form.Set("csrf", m[1])
	code, _, loc := b.do("POST", to, form)
	if code != http.StatusSeeOther {
		b.t.Fatalf("POST %s: %d", to, code)
	}
	_, next, _ := b.do("GET", loc, nil)
	return next
}

var uiLeader = regexp.MustCompile(`<dd id="leader">([^<]*)</dd>`)

func TestUIConsoleCluster(t *testing.T) {
	c := StartCluster(t, 3, uiBase)
	leader := c.Leader(c.Node(1))
	var follower, other *ClusterNode
	for _, n := range c.Others(leader) {
		if follower == nil {
			follower = n
		} else {
			other = n
		}
	}

	// sign in on a follower with a one-time link
	link := strings.TrimSpace(follower.MustCLI("ui", "login", "--name", "ops"))
	if strings.Count(link, "\n") != 0 || !strings.HasPrefix(link, "http://"+follower.Addr+"/ui/login?token=") {
		t.Fatalf("login link %q", link)
	}
	b := newUIBrowser(t, follower.URL)
	if code, _, loc := b.do("GET", link, nil); code != http.StatusSeeOther || loc != "/ui/" {
		t.Fatalf("login link: %d %q", code, loc)
	}
	if code, _, _ := newUIBrowser(t, follower.URL).do("GET", link, nil); code != http.StatusUnauthorized {
		t.Fatalf("the link worked twice: %d", code)
	}
	code, page, _ := b.do("GET", "/ui/", nil)
	if code != 200 {
		t.Fatalf("cluster page: %d", code)
	}
	if m := uiLeader.FindStringSubmatch(page); m == nil || m[1] != leader.ID {
		t.Fatalf("leader on the page: %v, want %s", m, leader.ID)
	}
	for _, n := range c.Nodes {
		role := "follower"
		if n == leader {
			role = "leader"
		}
		if want := fmt.Sprintf(`<tr data-node-id="%s" data-role="%s"`, n.ID, role); !strings.Contains(page, want) {
			t.Errorf("missing %s", want)
		}
		if !strings.Contains(page, "<td>"+n.GossipAddr+"</td>") || !strings.Contains(page, "<td>"+n.ClusterAddr+"</td>") {
			t.Errorf("addresses of %s (raft %s, gossip %s) not shown", n.ID, n.ClusterAddr, n.GossipAddr)
		}
	}

	// a ban added on the follower's page reaches a bouncer of the third node
	key := "uibouncerkey0123456789abcdefghij"
	other.MustCLI("bouncers", "add", "ui-fw", "--key", key)
	page = b.post("/ui/decisions", "/ui/decisions/add", url.Values{"value": {"203.0.113.77"}, "duration": {"1h"}, "reason": {"e2e console"}})
	if !strings.Contains(page, `id="flash" class="flash"`) {
		t.Fatalf("no success flash:\n%s", page)
	}
	bouncerSees := func(want bool) {
		t.Helper()
		waitFor(t, convergeTimeout, "bouncer on "+other.ID+" sees the ban", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", other.URL+"v1/decisions?ip=203.0.113.77", nil)
			req.Header.Set("X-Api-Key", key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			var ds []map[string]any
			data, _ := io.ReadAll(resp.Body)
			_ = json.Unmarshal(data, &ds)
			return (len(ds) > 0) == want, string(data)
		})
	}
	bouncerSees(true)
	// the follower's console names the node that served the bouncer
	waitFor(t, convergeTimeout, "bouncers page names "+other.ID, func() (bool, string) {
		_, page, _ := b.do("GET", "/ui/bouncers", nil)
		return strings.Contains(page, `<small class="pull-node">on `+other.ID+`</small>`), "not yet"
	})
	_, page, _ = b.do("GET", "/ui/decisions?q=203.0.113.77", nil)
	id := regexp.MustCompile(`data-decision-id="(\d+)" data-value="203.0.113.77"`).FindStringSubmatch(page)
	if id == nil {
		t.Fatalf("ban not listed:\n%s", page)
	}
	page = b.post("/ui/decisions", "/ui/decisions/unban", url.Values{"id": {id[1]}})
	if !strings.Contains(page, "Unbanned 1") {
		t.Fatalf("unban:\n%s", page)
	}
	bouncerSees(false)

	// the console's writes are attributed to the operator, once each, on
	// every node: the in-process admin calls add no "cli" record
	for _, n := range c.Nodes {
		waitFor(t, convergeTimeout, "audit trail on "+n.ID, func() (bool, string) {
			recs, err := auditList(n, 100)
			if err != nil {
				return false, err.Error()
			}
			counts := map[string]int{}
			for _, r := range recs {
				if strings.Contains(r.Target+r.Detail, "203.0.113.77") || r.Action == "decision.add" || r.Action == "decision.delete" {
					counts[r.Who+" "+r.Action]++
				}
			}
			ok := len(counts) == 2 && counts["link:ops decision.add"] == 1 && counts["link:ops decision.delete"] == 1
			return ok, fmt.Sprint(counts)
		})
	}

	// live: the event stream of the follower names the new leader after
	// the leader is killed, and so does the page
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+"/ui/events", nil)
	stream := &http.Client{Jar: b.c.Jar}
	resp, err := stream.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("events: %v %v", err, resp)
	}
	defer resp.Body.Close()
	events := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "data: ") {
				select {
				case events <- strings.TrimPrefix(l, "data: "):
				default:
				}
			}
		}
		close(events)
	}()
	leader.Kill()
	deadline := time.After(30 * time.Second)
	for newLeader := ""; newLeader == "" || newLeader == leader.ID; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream ended")
			}
			var e struct{ Leader string }
			_ = json.Unmarshal([]byte(ev), &e)
			newLeader = e.Leader
		case <-deadline:
			t.Fatal("no event named a new leader within 30 s")
		}
	}
	waitFor(t, 10*time.Second, "the cluster page shows a new leader", func() (bool, string) {
		_, page, _ := b.do("GET", "/ui/", nil)
		m := uiLeader.FindStringSubmatch(page)
		return m != nil && m[1] != "" && m[1] != leader.ID &&
			strings.Contains(page, fmt.Sprintf(`<tr data-node-id="%s" data-role="unreachable"`, leader.ID)), fmt.Sprint(m)
	})
}

func TestUIConsoleOff(t *testing.T) {
	s := NewServer(t)
	s.ExtraArgs = []string{"--ui=false"}
	s.Start()
	out, err := s.CLI("ui", "login")
	if err == nil || !strings.Contains(err.Error(), "the web console is off on this node") {
		t.Fatalf("ui login with --ui=false: %q %v", out, err)
	}
	b := newUIBrowser(t, s.URL)
	if code, body, _ := b.do("GET", "/ui/login", nil); code != http.StatusNotFound || strings.Contains(body, "halapi ui login") {
		t.Fatalf("/ui/login with --ui=false: %d %s", code, body)
	}
	// and a bad --ttl is one line, before any call
	s2 := StartServer(t)
	if _, err := s2.CLI("ui", "login", "--ttl", "48h"); err == nil || !strings.Contains(err.Error(), "--ttl must be between") {
		t.Fatalf("--ttl 48h: %v", err)
	}
}

func TestUIConsoleOwnListener(t *testing.T) {
	s := NewServer(t)
	uiAddr := freeLoopbackAddr(t)
	s.ExtraArgs = []string{"--ui-listen", uiAddr}
	s.Start()
	link := strings.TrimSpace(s.MustCLI("ui", "login"))
	if !strings.HasPrefix(link, "http://"+uiAddr+"/ui/login?token=") {
		t.Fatalf("link %q, want one on %s", link, uiAddr)
	}
	b := newUIBrowser(t, "http://"+uiAddr)
	if code, _, loc := b.do("GET", link, nil); code != http.StatusSeeOther || loc != "/ui/" {
		t.Fatalf("login: %d %q", code, loc)
	}
	if code, page, _ := b.do("GET", "/ui/", nil); code != 200 || !strings.Contains(page, `id="members"`) {
		t.Fatalf("cluster page on --ui-listen: %d", code)
	}
	if code, _, loc := b.do("GET", "/", nil); code != http.StatusSeeOther || loc != "/ui/" {
		t.Fatalf("/ on --ui-listen: %d %q", code, loc)
	}
	// not on the API listener
	if code, _, _ := newUIBrowser(t, s.URL).do("GET", "/ui/login", nil); code != http.StatusNotFound {
		t.Fatalf("/ui/ on the API listener: %d", code)
	}
}

// TestUIConsoleSecureNode: the console of a node with the built-in PKI
// (the default): an https login link, a Secure cookie, the real PKI admin
// routes behind the certificates page (revoke, one-time token).
func TestUIConsoleSecureNode(t *testing.T) {
	sc := newSecureCluster(t)
	nd := sc.Found()
	link := strings.TrimSpace(nd.MustCLI("ui", "login", "--name", "sec"))
	if !strings.HasPrefix(link, "https://"+nd.Addr+"/ui/login?token=") {
		t.Fatalf("link %q", link)
	}
	tlsCfg, err := sc.clientTLS()
	if err != nil {
		t.Fatal(err)
	}
	b := newUIBrowser(t, nd.URL)
	b.c.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	req, _ := http.NewRequest("GET", link, nil)
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var secure bool
	for _, c := range resp.Cookies() {
		secure = secure || (c.Name == "halapi_ui" && c.Secure && c.HttpOnly)
	}
	if resp.StatusCode != http.StatusSeeOther || !secure {
		t.Fatalf("https sign-in: %d %v", resp.StatusCode, resp.Cookies())
	}
	ic := issueCert(t, nd, "bouncer", "ui-fw9", nd.URL)
	serial := fmt.Sprintf("%d", leafOf(t, ic.Cert).SerialNumber)
	_, page, _ := b.do("GET", "/ui/certs", nil)
	row := fmt.Sprintf(`<tr data-serial="%s" data-name="ui-fw9" data-revoked="false">`, serial)
	if !strings.Contains(page, row) {
		t.Fatalf("certificate %s not listed:\n%s", serial, page)
	}
	page = b.post("/ui/certs", "/ui/certs/revoke", url.Values{"serial": {serial}})
	if !strings.Contains(page, `id="flash" class="flash"`) || !strings.Contains(page, fmt.Sprintf(`<tr data-serial="%s" data-name="ui-fw9" data-revoked="true">`, serial)) {
		t.Fatalf("revoke:\n%s", page)
	}
	if out := nd.MustCLI("cert", "list"); !strings.Contains(out, serial) || !strings.Contains(strings.ToLower(out), "revoked") {
		t.Fatalf("cert list after the console's revoke:\n%s", out)
	}
	page = b.post("/ui/certs", "/ui/certs/token", url.Values{"role": {"agent"}, "name": {"ui-agent1"}})
	if m := regexp.MustCompile(`<pre id="token-output">([^<]{20,})</pre>`).FindStringSubmatch(page); m == nil {
		t.Fatalf("no one-time token:\n%s", page)
	}
}
