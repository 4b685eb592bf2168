package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
	"github.com/go-openapi/strfmt"
)

// "Acknowledged must be enforced, everywhere": credential changes made on
// one node are enforced by every node as soon as the admin command
// returns, and machine tokens die with the credentials they came from.
// TestHardeningAuthRefresh runs on its own cluster whose tokens live 6 s
// and whose logins' tokens never outlive them by more than 12 s
// (--jwt-ttl, --jwt-max-age), so the refresh limit is reached in the test.

const (
	authJWTTTL    = 6 * time.Second
	authJWTMaxAge = 12 * time.Second
)

func TestHardeningAuth(t *testing.T) {
	// the rounds provoke refused logins on purpose (deleted machines):
	// keep the per-source login backoff out of their way
	c := StartCluster(t, 3, 170, WithServeArgs("--login-free-failures", "1000000"))
	c.WaitCaughtUp(c.Nodes...)

	t.Run("DeletedMachineTokenRefusedEverywhere", func(t *testing.T) { authDeletedMachine(t, c) })
	t.Run("CrossNodeAdminThenAuth", func(t *testing.T) { authCrossNode(t, c) })
	t.Run("BadKeyFloodOnFollower", func(t *testing.T) { authBadKeyFlood(t, c) })
}

func TestHardeningAuthRefresh(t *testing.T) {
	c := StartCluster(t, 3, 174, WithServeArgs("--jwt-ttl", authJWTTTL.String(), "--jwt-max-age", authJWTMaxAge.String()))
	c.WaitCaughtUp(c.Nodes...)
	authRefreshMaxAge(t, c)
}

// ---------------------------------------------------------------------------
// helpers

// adminClient talks to a node's admin socket directly (what the CLI does,
// without a process start per command).
func adminClient(nd *ClusterNode) *http.Client {
	sock := filepath.Join(nd.DataDir, "admin.sock")
	return &http.Client{Timeout: cliTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

func adminDo(t testing.TB, hc *http.Client, method, path string, body any, want int) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, "http://halapi/admin/v1"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("admin %s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, out)
	}
}

// login is POST /v1/watchers/login through the crowdsec apiclient; it
// returns the token, or the HTTP status and error of a refusal.
func login(t testing.TB, nd *ClusterNode, id, password string) (string, int, error) {
	t.Helper()
	cl, err := apiclient.NewDefaultClient(mustURL(t, nd.URL), "v1", watcherUA, nil)
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		tok  string
		code int
	}
	pw := strfmt.Password(password)
	r, err := call("AuthenticateWatcher on "+nd.ID, func(ctx context.Context) (res, error) {
		out, resp, err := cl.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{MachineID: &id, Password: &pw, Scenarios: testScenarios})
		return res{out.Token, statusOf(resp)}, err
	})
	return r.tok, r.code, err
}

func mustLogin(t testing.TB, nd *ClusterNode, id, password string) string {
	t.Helper()
	tok, code, err := login(t, nd, id, password)
	if err != nil || tok == "" {
		t.Fatalf("login %s on %s: status %d: %v", id, nd.ID, code, err)
	}
	return tok
}

// tokenCall sends one request with a bearer token and returns the status
// and the body's message.
func tokenCall(t testing.TB, nd *ClusterNode, method, path, tok string) (int, string) {
	t.Helper()
	return tokenCallWith(t, http.DefaultClient, nd, method, path, tok)
}

func tokenCallWith(t testing.TB, hc *http.Client, nd *ClusterNode, method, path, tok string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(nd.URL, "/")+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", watcherUA)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", method, path, nd.ID, err)
	}
	defer resp.Body.Close()
	var body struct {
		Message string `json:"message"`
		Token   string `json:"token"`
	}
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &body)
	if body.Token != "" {
		return resp.StatusCode, body.Token
	}
	return resp.StatusCode, body.Message
}

func tokenClaims(t testing.TB, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	data, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// bouncerStatus is GET /v1/decisions?ip= with key through go-cs-bouncer:
// the HTTP status of the answer.
func bouncerStatus(t testing.TB, nd *ClusterNode, key string) int {
	t.Helper()
	lb := &csbouncer.LiveBouncer{APIKey: key, APIUrl: nd.URL, UserAgent: "e2e-auth-bouncer/v0.0.21"}
	if err := lb.Init(); err != nil {
		t.Fatalf("LiveBouncer.Init: %v", err)
	}
	code, _, err := liveStatus(lb, "192.0.2.1")
	if code == 0 {
		t.Fatalf("bouncer call on %s: no answer: %v", nd.ID, err)
	}
	return code
}

// metricValue reads one unlabelled counter from a node's /metrics
// (--metrics-listen, never the API port).
func metricValue(t testing.TB, nd *ClusterNode, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.MetricsAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics of %s: %v", nd.ID, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not exposed by %s", name, nd.ID)
	return 0
}

// ---------------------------------------------------------------------------
// subtests

// A deleted machine's token is refused on every node as soon as
// `machines delete` returns; re-creating the machine under the same id (same
// password) or changing its password does not bring old tokens back.
func authDeletedMachine(t *testing.T, c *Cluster) {
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	n1.MustCLI("machines", "add", "doomed", "--password", "doomed-pw")
	// the agent logs in on n2 with the real client and works on every node
	agent := newWatcher(t, n2.Server, "doomed", "doomed-pw")
	mustCall(t, "Ping", func(ctx context.Context) (bool, error) {
		ok, _, err := agent.HeartBeat.Ping(ctx)
		return ok, err
	})
	tok := mustLogin(t, n2, "doomed", "doomed-pw")
	for _, nd := range c.Nodes {
		if code, msg := tokenCall(t, nd, "GET", "/v1/heartbeat", tok); code != 200 {
			t.Fatalf("fresh token on %s: %d %s", nd.ID, code, msg)
		}
	}

	n1.MustCLI("machines", "delete", "doomed")
	for _, nd := range c.Nodes {
		code, msg := tokenCall(t, nd, "GET", "/v1/heartbeat", tok)
		if code != 401 || !strings.Contains(msg, "not found") {
			t.Fatalf("deleted machine's token on %s right after delete: %d %q, want 401 machine not found", nd.ID, code, msg)
		}
		if code, _ := tokenCall(t, nd, "GET", "/v1/refresh_token", tok); code != 401 {
			t.Fatalf("deleted machine's token refreshed on %s: %d", nd.ID, code)
		}
	}
	// the agent is locked out too (its re-login is refused)
	_, err := call("Ping after delete", func(ctx context.Context) (bool, error) {
		ok, _, err := agent.HeartBeat.Ping(ctx)
		return ok, err
	})
	if err == nil {
		t.Fatal("agent of a deleted machine still works")
	}

	// same id, same password: a new generation
	n3.MustCLI("machines", "add", "doomed", "--password", "doomed-pw")
	for _, nd := range c.Nodes {
		if code, msg := tokenCall(t, nd, "GET", "/v1/heartbeat", tok); code != 401 || !strings.Contains(msg, "revoked") {
			t.Fatalf("old token after re-create on %s: %d %q, want 401 revoked", nd.ID, code, msg)
		}
	}
	tok2 := mustLogin(t, n1, "doomed", "doomed-pw")
	// password change (add --force) on another node
	n2.MustCLI("machines", "add", "doomed", "--password", "other-pw", "--force")
	for _, nd := range c.Nodes {
		if code, msg := tokenCall(t, nd, "GET", "/v1/heartbeat", tok2); code != 401 || !strings.Contains(msg, "revoked") {
			t.Fatalf("token after password change on %s: %d %q, want 401 revoked", nd.ID, code, msg)
		}
	}
	tok3 := mustLogin(t, n3, "doomed", "other-pw")
	if code, msg := tokenCall(t, n1, "GET", "/v1/heartbeat", tok3); code != 200 {
		t.Fatalf("new password's token on n1: %d %s", code, msg)
	}
}

// /v1/refresh_token keeps the login time and stops at --jwt-max-age; an
// agent holding a dead token gets a 401 and logs in again by itself.
func authRefreshMaxAge(t *testing.T, c *Cluster) {
	c.Node(1).MustCLI("machines", "add", "refresher", "--password", "refresher-pw")
	tok := mustLogin(t, c.Node(2), "refresher", "refresher-pw")
	orig := tokenClaims(t, tok)["orig_iat"].(float64)
	loginAt := time.Unix(int64(orig), 0)

	// refresh on every node in turn until refused
	cur, refreshes, i := tok, 0, 0
	var refusedAt time.Time
	waitFor(t, authJWTMaxAge+5*time.Second, "refresh refused past the maximum age", func() (bool, string) {
		nd := c.Nodes[i%len(c.Nodes)]
		i++
		code, out := tokenCall(t, nd, "GET", "/v1/refresh_token", cur)
		if code != 200 {
			refusedAt = time.Now()
			if code != 401 {
				t.Fatalf("refresh on %s: %d %s, want 401", nd.ID, code, out)
			}
			return true, ""
		}
		cl := tokenClaims(t, out)
		if cl["orig_iat"].(float64) != orig {
			t.Fatalf("refresh on %s moved orig_iat from %v to %v", nd.ID, orig, cl["orig_iat"])
		}
		if exp := time.Unix(int64(cl["exp"].(float64)), 0); exp.After(loginAt.Add(authJWTMaxAge)) {
			t.Fatalf("refreshed token expires at %s, past login %s + max age", exp, loginAt)
		}
		cur = out
		refreshes++
		return false, fmt.Sprintf("%d refreshes", refreshes)
	})
	if refreshes < 3 {
		t.Fatalf("only %d refreshes before the refusal", refreshes)
	}
	// orig_iat is truncated to the second: allow one second
	if refusedAt.Before(loginAt.Add(authJWTMaxAge - time.Second)) {
		t.Fatalf("refresh refused %s after login, before the maximum age %s", refusedAt.Sub(loginAt), authJWTMaxAge)
	}

	// An agent whose token is dead: the crowdsec client gets a 401,
	// drops the token, logs in again and the call succeeds.
	agent := newWatcher(t, c.Node(3).Server, "refresher", "refresher-pw")
	jt, ok := agent.GetClient().Transport.(*apiclient.JWTTransport)
	if !ok {
		t.Fatalf("agent transport is %T", agent.GetClient().Transport)
	}
	jt.Token, jt.Expiration = cur, time.Now().Add(time.Hour) // as if still valid
	if code, _ := tokenCall(t, c.Node(3), "GET", "/v1/heartbeat", cur); code != 401 {
		t.Fatalf("dead token accepted: %d", code)
	}
	mustCall(t, "Ping with a dead token", func(ctx context.Context) (bool, error) {
		ok, _, err := agent.HeartBeat.Ping(ctx)
		return ok, err
	})
	if jt.Token == cur || jt.Token == "" {
		t.Fatal("the agent did not log in again")
	}
}

// Admin writes on node A are enforced by node B for the very next request.
// A and B rotate over the cluster (leader and followers).
func authCrossNode(t *testing.T, c *Cluster) {
	// 18 rounds: every ordered pair of the 3 nodes (the rotation repeats
	// every 6) three times, leader and followers on both sides
	const rounds = 18
	// an agent on every node, to check allowlists there
	adminDo(t, adminClient(c.Node(1)), "POST", "/machines", map[string]any{"machine_id": "allowcheck", "password": "allowcheck-pw"}, 201)
	adminDo(t, adminClient(c.Node(1)), "POST", "/allowlists", map[string]any{"name": "xal"}, 201)
	agents := map[*ClusterNode]*apiclient.ApiClient{}
	for _, nd := range c.Nodes {
		agents[nd] = newWatcher(t, nd.Server, "allowcheck", "allowcheck-pw")
	}
	allowlisted := func(nd *ClusterNode, ip string) bool {
		return mustCall(t, "CheckIfAllowlisted on "+nd.ID, func(ctx context.Context) (bool, error) {
			ok, _, err := agents[nd].Allowlists.CheckIfAllowlisted(ctx, ip)
			return ok, err
		})
	}
	start := time.Now()
	for i := 0; i < rounds; i++ {
		a, b := c.Nodes[i%3], c.Nodes[(i+1+i/3%2)%3]
		ha := adminClient(a)

		ip := fmt.Sprintf("198.51.100.%d", i)
		adminDo(t, ha, "POST", "/allowlists/xal/items", map[string]any{"values": []string{ip}}, 200)
		if !allowlisted(b, ip) {
			t.Fatalf("round %d: %s allowlisted on %s, not allowlisted on %s at once", i, ip, a.ID, b.ID)
		}
		adminDo(t, ha, "DELETE", "/allowlists/xal/items", map[string]any{"values": []string{ip}}, 200)
		if allowlisted(b, ip) {
			t.Fatalf("round %d: %s removed from the allowlist on %s, still allowlisted on %s", i, ip, a.ID, b.ID)
		}
		name, key := fmt.Sprintf("xb%d", i), randomHex(16)
		adminDo(t, ha, "POST", "/bouncers", map[string]string{"name": name, "key": key}, 201)
		if code := bouncerStatus(t, b, key); code != 200 {
			t.Fatalf("round %d: bouncer added on %s, key refused on %s at once: %d", i, a.ID, b.ID, code)
		}

		id, pw := fmt.Sprintf("xm%d", i), "pw-"+randomHex(8)
		adminDo(t, ha, "POST", "/machines", map[string]any{"machine_id": id, "password": pw}, 201)
		tok, code, err := login(t, b, id, pw)
		if err != nil {
			t.Fatalf("round %d: machine added on %s, login on %s at once: %d %v", i, a.ID, b.ID, code, err)
		}

		// a pending machine validated on A logs in on B at once
		pid, ppw := fmt.Sprintf("xp%d", i), "pw-"+randomHex(8)
		if err := registerWatcher(t, a.Server, pid, ppw); err != nil {
			t.Fatalf("round %d: register on %s: %v", i, a.ID, err)
		}
		adminDo(t, ha, "POST", "/machines/"+pid+"/validate", nil, 204)
		if _, code, err := login(t, b, pid, ppw); err != nil {
			t.Fatalf("round %d: machine validated on %s, login on %s at once: %d %v", i, a.ID, b.ID, code, err)
		}

		adminDo(t, ha, "DELETE", "/machines/"+id, nil, 204)
		if _, code, err := login(t, b, id, pw); err == nil || code != 401 {
			t.Fatalf("round %d: machine deleted on %s, login on %s at once: %d %v", i, a.ID, b.ID, code, err)
		}
		if code, msg := tokenCall(t, b, "GET", "/v1/heartbeat", tok); code != 401 {
			t.Fatalf("round %d: machine deleted on %s, its token on %s at once: %d %s", i, a.ID, b.ID, code, msg)
		}

		adminDo(t, ha, "DELETE", "/bouncers/"+name, nil, 204)
		if code := bouncerStatus(t, b, key); code != 403 {
			t.Fatalf("round %d: bouncer deleted on %s, key on %s at once: %d", i, a.ID, b.ID, code)
		}
		adminDo(t, ha, "DELETE", "/machines/"+pid, nil, 204)
	}
	t.Logf("%d cross-node rounds in %s", rounds, time.Since(start).Round(time.Millisecond))
}

// A flood of bad keys on a follower is refused, every refusal is confirmed
// with the leader, and the confirmations cost at most one leader round
// trip per 100 ms.
func authBadKeyFlood(t *testing.T, c *Cluster) {
	leader := c.Leader(c.Node(1))
	follower := c.Others(leader)[0]
	checks0 := metricValue(t, follower, "halapi_freshness_checks_total")
	rpcs0 := metricValue(t, follower, "halapi_freshness_leader_rpcs_total")

	const workers, perWorker = 16, 25
	var mu sync.Mutex
	codes := map[int]int{}
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < perWorker; j++ {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, follower.URL+"v1/decisions?ip=192.0.2.1", nil)
				req.Header.Set("X-Api-Key", randomHex(16))
				code := 0
				if resp, err := http.DefaultClient.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				cancel()
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	refused := codes[403] + codes[429]
	if refused != workers*perWorker {
		t.Fatalf("bad keys: answers %v, want all refused", codes)
	}
	checks := metricValue(t, follower, "halapi_freshness_checks_total") - checks0
	rpcs := metricValue(t, follower, "halapi_freshness_leader_rpcs_total") - rpcs0
	limit := float64(elapsed/(100*time.Millisecond)) + 2
	t.Logf("%d bad keys on follower %s in %s: %v; %v confirmations, %v leader round trips (limit %v)",
		workers*perWorker, follower.ID, elapsed.Round(time.Millisecond), codes, checks, rpcs, limit)
	if checks < float64(codes[403]) {
		t.Fatalf("%v refusals confirmed, %d answered 403", checks, codes[403])
	}
	if rpcs < 1 || rpcs > limit {
		t.Fatalf("%v leader round trips for %s of bad keys, want 1..%v", rpcs, elapsed, limit)
	}
}

// A token from a certificate login is bound to that certificate: refused
// without it or with another one, and on every node as soon as `cert
// revoke` returns.
func TestHardeningAuthCertBoundToken(t *testing.T) {
	sc := startSecureCluster(t, 3)
	n1, n2, n3 := sc.Node(1), sc.Node(2), sc.Node(3)
	creds := loadAgentCredentials(t, issueCert(t, n1, "agent", "agb", n1.URL).Cfg)
	other := loadAgentCredentials(t, issueCert(t, n1, "agent", "agc", n1.URL).Cfg)

	agent := newCertAgent(t, creds, n2.URL)
	mustCall(t, "Ping with a certificate", func(ctx context.Context) (bool, error) {
		ok, _, err := agent.HeartBeat.Ping(ctx)
		return ok, err
	})
	jt := agent.GetClient().Transport.(*apiclient.JWTTransport)
	tok := jt.Token
	if cl := tokenClaims(t, tok); cl["cnf"] == nil || cl["gen"] == nil {
		t.Fatalf("certificate login token without cnf/gen claims: %v", cl)
	}

	pool, cert := agentTLS(t, creds)
	_, otherCert := agentTLS(t, other)
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: callTimeout, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs, MinVersion: tls.VersionTLS12}}}
	}
	withCert, noCert, wrongCert := client(cert), client(), client(otherCert)
	for _, nd := range sc.Nodes {
		if code, msg := tokenCallWith(t, withCert, nd, "GET", "/v1/heartbeat", tok); code != 200 {
			t.Fatalf("%s: token with its certificate: %d %s", nd.ID, code, msg)
		}
	}
	if code, msg := tokenCallWith(t, noCert, n3, "GET", "/v1/heartbeat", tok); code != 401 || !strings.Contains(msg, "bound") {
		t.Fatalf("token without its certificate: %d %q, want 401", code, msg)
	}
	if code, msg := tokenCallWith(t, wrongCert, n3, "GET", "/v1/heartbeat", tok); code != 401 || !strings.Contains(msg, "bound") {
		t.Fatalf("token with another agent's certificate: %d %q, want 401", code, msg)
	}

	out := n3.MustCLI("cert", "revoke", "--name", "agb")
	t.Logf("cert revoke --name agb on n3: %s", strings.TrimSpace(out))
	for _, nd := range sc.Nodes {
		code, msg := tokenCallWith(t, withCert, nd, "GET", "/v1/heartbeat", tok)
		if code != 401 || !strings.Contains(msg, "revoked") {
			t.Fatalf("%s: token of a revoked certificate right after revoke: %d %q, want 401 revoked", nd.ID, code, msg)
		}
		if code, _ := tokenCallWith(t, withCert, nd, "GET", "/v1/refresh_token", tok); code != 401 {
			t.Fatalf("%s: refresh with a revoked certificate: %d, want 401", nd.ID, code)
		}
	}
	// the agent cannot recover with a revoked certificate
	if _, err := call("Ping after revoke", func(ctx context.Context) (bool, error) {
		ok, _, err := agent.HeartBeat.Ping(ctx)
		return ok, err
	}); err == nil {
		t.Fatal("agent with a revoked certificate still works")
	}
}
