package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"
	"gopkg.in/yaml.v3"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"

	"github.com/halapi/halapi/internal/testharness"
)

// Secure-cluster harness: halapi nodes with the built-in PKI (HTTPS API
// with node certificates, mTLS and encrypted gossip between nodes) formed
// the way an operator does it: the first node founds the cluster alone,
// the others join with one-time tokens from `halapi cluster token`. Every
// address is on 127.0.0.1, the address in the node certificates' SANs.

const (
	// pkiReadyTimeout bounds the wait for the first node's CA on disk and
	// for the CA to be loaded on a node that just joined.
	pkiReadyTimeout = 20 * time.Second
	// joinRefusedTimeout bounds a `serve` that must exit because its join
	// token is refused.
	joinRefusedTimeout = 30 * time.Second
)

// secureCluster is a Cluster whose nodes use the built-in PKI. The embedded
// Cluster gives WaitStable, CheckMembersAlive and the node lookups.
type secureCluster struct {
	*Cluster
	// CAFile is the cluster root as the first node wrote it (DATA/pki/ca.crt).
	CAFile string
	extra  []string
}

// newSecureCluster prepares an empty secure cluster; extra flags go on every
// node's serve command line. Found starts its first node.
func newSecureCluster(t testing.TB, extra ...string) *secureCluster {
	t.Helper()

	return &secureCluster{Cluster: &Cluster{t: t}, extra: extra}
}

// newNode prepares node n<len+1> (not started) with a secure serve command
// line plus joinArgs.
func (sc *secureCluster) newNode(joinArgs ...string) *ClusterNode {
	sc.t.Helper()

	i := len(sc.Nodes) + 1
	nd := &ClusterNode{
		Server:      NewServer(sc.t),
		Index:       i,
		ID:          fmt.Sprintf("n%d", i),
		IP:          "127.0.0.1",
		ClusterAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortOn(sc.t, "127.0.0.1", false))),
		GossipAddr:  net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortOn(sc.t, "127.0.0.1", true))),
	}
	nd.URL = "https://" + nd.Addr + "/"
	nd.TLS = sc.clientTLS
	nd.ExtraArgs = append([]string{
		"--node-id", nd.ID,
		"--cluster-listen", nd.ClusterAddr,
		"--gossip-listen", nd.GossipAddr,
	}, joinArgs...)
	nd.ExtraArgs = append(nd.ExtraArgs, sc.extra...)
	sc.Nodes = append(sc.Nodes, nd)
	// Registered after the node's own cleanup, so it runs before it: the
	// nodes are stopped all at once (one by one, the last ones would wait
	// for a quorum that is already gone). Stopping is idempotent.
	sc.t.Cleanup(sc.stopAll)

	return nd
}

// clientTLS trusts the cluster root (an error until the first node has
// written it).
func (sc *secureCluster) clientTLS() (*tls.Config, error) {
	if sc.CAFile == "" {
		return nil, errors.New("no cluster CA yet")
	}
	pem, err := os.ReadFile(sc.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", sc.CAFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// Found starts the first node (no token: it bootstraps raft and creates the
// CA) and waits until its HTTPS API is healthy.
func (sc *secureCluster) Found() *ClusterNode {
	sc.t.Helper()

	nd := sc.newNode()
	sc.CAFile = filepath.Join(nd.DataDir, "pki", "ca.crt")
	nd.Launch()
	waitFor(sc.t, pkiReadyTimeout, "n1 writes the cluster CA to "+sc.CAFile, func() (bool, string) {
		_, err := os.Stat(sc.CAFile)
		return err == nil, fmt.Sprint(err)
	})
	nd.waitHealthy()
	nd.setUp(true)
	sc.WaitStable(clusterFormTimeout, nd)

	return nd
}

// JoinToken runs `halapi cluster token` on nd, retrying while nd's CA is
// not loaded yet (a node that just joined).
func (sc *secureCluster) JoinToken(nd *ClusterNode) string {
	sc.t.Helper()

	var tok string
	waitFor(sc.t, pkiReadyTimeout, "cluster token on "+nd.ID, func() (bool, string) {
		out, err := nd.CLI("cluster", "token", "--ttl", "10m")
		if err != nil {
			return false, err.Error()
		}
		tok = strings.TrimSpace(out)
		return tok != "", "empty output"
	})

	return tok
}

// Join starts one more node that redeems token at via's API, and waits
// until it is healthy and every node lists every node as an alive voter.
func (sc *secureCluster) Join(token string, via *ClusterNode) *ClusterNode {
	sc.t.Helper()

	nd := sc.newNode("--join", sc.Nodes[0].GossipAddr, "--join-token", token, "--join-api", via.Addr)
	nd.Launch()
	nd.waitHealthy()
	nd.setUp(true)
	sc.WaitStable(clusterFormTimeout, sc.Nodes...)
	if !sc.CheckMembersAlive(clusterFormTimeout, sc.Nodes...) {
		sc.t.FailNow()
	}

	return nd
}

// startSecureCluster founds a cluster and joins n-1 nodes to it, each with
// a token minted on the previous node and redeemed at that node's API.
func startSecureCluster(t testing.TB, n int, extra ...string) *secureCluster {
	t.Helper()

	sc := newSecureCluster(t, extra...)
	prev := sc.Found()
	for range n - 1 {
		prev = sc.Join(sc.JoinToken(prev), prev)
	}

	return sc
}

// RefusedJoin runs `halapi serve` for a new node that redeems token at via's
// API and expects it to exit non-zero with an error that mentions "join";
// it returns the process's output.
func (sc *secureCluster) RefusedJoin(what, token string, via *ClusterNode) string {
	sc.t.Helper()

	dir := sc.t.TempDir()
	args := []string{"serve", "--node-id", "intruder", "--data-dir", filepath.Join(dir, "data"),
		"--listen", freeLoopbackAddr(sc.t),
		"--cluster-listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortOn(sc.t, "127.0.0.1", false))),
		"--gossip-listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortOn(sc.t, "127.0.0.1", true))),
		"--join", sc.Nodes[0].GossipAddr, "--join-token", token, "--join-api", via.Addr}
	args = append(args, sc.extra...)

	out, timedOut, err := runUntilExit(joinRefusedTimeout, args...)
	switch {
	case timedOut:
		sc.t.Fatalf("%s: serve with that token still running after %s (token accepted?); output:\n%s",
			what, joinRefusedTimeout, out)
	case err == nil:
		sc.t.Fatalf("%s: serve exited 0; output:\n%s", what, out)
	case !strings.Contains(strings.ToLower(out), "join"):
		sc.t.Fatalf("%s: serve failed (%v) without mentioning the join; output:\n%s", what, err, out)
	}

	return out
}

// runUntilExit runs the halapi binary with args until it exits, or kills
// it after timeout (timedOut); out holds stdout and stderr together.
func runUntilExit(timeout time.Duration, args ...string) (out string, timedOut bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, halapiBin, args...)
	testharness.SetProcAttr(cmd)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	return buf.String(), ctx.Err() != nil, err
}

// tamperJoinToken returns a well-formed join token with the same CA
// fingerprint and a different secret.
func tamperJoinToken(t testing.TB, tok string) string {
	t.Helper()

	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) < 2 {
		t.Fatalf("join token %q is not base64url: %v", tok, err)
	}
	raw[len(raw)-1] ^= 0x5a
	return base64.RawURLEncoding.EncodeToString(raw)
}

// halapiCmd runs the halapi binary with args (no --data-dir added) and
// returns stdout; the error includes both outputs.
func halapiCmd(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, halapiBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %s: %w", cliTimeout, ctx.Err())
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("halapi %s: %w\nstdout: %s\nstderr: %s",
			strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// ---------------------------------------------------------------------------
// Certificates and the files halapi writes for clients

// issuedCert is what `halapi cert issue` / `halapi agent enroll` wrote.
type issuedCert struct {
	Name, Dir          string
	Cert, Key, CA, Cfg string
}

// issueCert runs `halapi cert issue ROLE NAME --out DIR -u URL` on nd.
func issueCert(t testing.TB, nd *ClusterNode, role, name, lapiURL string) issuedCert {
	t.Helper()

	dir := filepath.Join(t.TempDir(), name)
	nd.MustCLI("cert", "issue", role, name, "--out", dir, "-u", lapiURL)
	return clientFiles(t, role, name, dir)
}

// clientFiles checks that dir holds NAME.crt, NAME.key, ca.crt and the
// role's config file.
func clientFiles(t testing.TB, role, name, dir string) issuedCert {
	t.Helper()

	ic := issuedCert{Name: name, Dir: dir, Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"),
		CA: filepath.Join(dir, "ca.crt")}
	switch role {
	case "agent":
		ic.Cfg = filepath.Join(dir, "local_api_credentials.yaml")
	case "bouncer":
		ic.Cfg = filepath.Join(dir, "bouncer-tls.yaml")
	default:
		t.Fatalf("role %q", role)
	}
	for _, f := range []string{ic.Cert, ic.Key, ic.CA, ic.Cfg} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s %s: %v", role, name, err)
		}
	}
	return ic
}

// leafOf parses the first certificate of a PEM file.
func leafOf(t testing.TB, path string) *x509.Certificate {
	t.Helper()

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// ---------------------------------------------------------------------------
// Agents authenticating with a certificate, as crowdsec does it

// agentCredentials mirrors csconfig.ApiCredentialsCfg, the
// local_api_credentials.yaml the crowdsec agent and cscli read.
type agentCredentials struct {
	PapiURL    string `yaml:"papi_url,omitempty"`
	URL        string `yaml:"url,omitempty"`
	Login      string `yaml:"login,omitempty"`
	Password   string `yaml:"password,omitempty"`
	CACertPath string `yaml:"ca_cert_path,omitempty"`
	KeyPath    string `yaml:"key_path,omitempty"`
	CertPath   string `yaml:"cert_path,omitempty"`
}

// loadAgentCredentials decodes the file as csconfig.LocalApiClientCfg.Load
// does (unknown fields are an error) and applies its checks.
func loadAgentCredentials(t testing.TB, path string) agentCredentials {
	t.Helper()

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c agentCredentials
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: crowdsec would refuse it: %v\n%s", path, err, b)
	}
	if c.URL == "" {
		t.Fatalf("%s: no url\n%s", path, b)
	}
	if (c.CertPath != "" || c.KeyPath != "") && c.Login != "" {
		t.Fatalf("%s: login and TLS auth are mutually exclusive for crowdsec\n%s", path, b)
	}
	if c.CertPath == "" || c.KeyPath == "" || c.CACertPath == "" {
		t.Fatalf("%s: cert_path, key_path and ca_cert_path expected\n%s", path, b)
	}
	return c
}

// apiclientTLS serializes the use of apiclient's package-level TLS settings.
var apiclientTLS sync.Mutex

// agentTLS loads what csconfig.LocalApiClientCfg.Load puts into
// apiclient.CaCertPool (system pool plus ca_cert_path) and apiclient.Cert.
func agentTLS(t testing.TB, creds agentCredentials) (*x509.CertPool, tls.Certificate) {
	t.Helper()

	caPEM, err := os.ReadFile(creds.CACertPath)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s: no CA certificate", creds.CACertPath)
	}
	cert, err := tls.LoadX509KeyPair(creds.CertPath, creds.KeyPath)
	if err != nil {
		t.Fatalf("load agent certificate: %v", err)
	}
	return pool, cert
}

// withAgentTLS sets apiclient's TLS globals (CA pool, client cert) for
// creds while a client is built; call the returned func to reset them.
func withAgentTLS(t testing.TB, creds agentCredentials) func() {
	pool, cert := agentTLS(t, creds)
	apiclientTLS.Lock()
	apiclient.InsecureSkipVerify = false
	apiclient.CaCertPool = pool
	apiclient.Cert = &cert
	return func() {
		apiclient.CaCertPool, apiclient.Cert = nil, nil
		apiclientTLS.Unlock()
	}
}

// newCertAgent builds the crowdsec agent's LAPI client for creds on lapiURL
// ("" keeps creds.URL): like csconfig.LocalApiClientCfg.Load it sets
// apiclient.InsecureSkipVerify (false), apiclient.CaCertPool (system pool
// plus ca_cert_path) and apiclient.Cert, then apiclient.NewClient copies
// them into the client's transport; the globals are reset afterwards.
func newCertAgent(t testing.TB, creds agentCredentials, lapiURL string) *apiclient.ApiClient {
	t.Helper()

	if lapiURL == "" {
		lapiURL = creds.URL
	}
	if !strings.HasSuffix(lapiURL, "/") {
		lapiURL += "/"
	}
	defer withAgentTLS(t, creds)()

	return apiclient.NewClient(&apiclient.Config{
		MachineID:     creds.Login,
		Password:      strfmt.Password(creds.Password),
		URL:           mustURL(t, lapiURL),
		VersionPrefix: "v1",
		UserAgent:     watcherUA,
		UpdateScenario: func(context.Context) ([]string, error) {
			return testScenarios, nil
		},
	})
}

// newCertDefaultClient is apiclient.NewDefaultClient (no JWT transport, no
// retries: what cscli uses for one-shot calls) with the same TLS settings.
func newCertDefaultClient(t testing.TB, creds agentCredentials, lapiURL string) *apiclient.ApiClient {
	t.Helper()

	if !strings.HasSuffix(lapiURL, "/") {
		lapiURL += "/"
	}
	defer withAgentTLS(t, creds)()

	c, err := apiclient.NewDefaultClient(mustURL(t, lapiURL), "v1", watcherUA, nil)
	if err != nil {
		t.Fatalf("NewDefaultClient: %v", err)
	}
	return c
}

// certLogin is the agent's login with a certificate (empty machine_id and
// password, as crowdsec sends them); it returns the HTTP status.
func certLogin(c *apiclient.ApiClient) (int, error) {
	return call("Auth.AuthenticateWatcher", func(ctx context.Context) (int, error) {
		empty, pw := "", strfmt.Password("")
		_, resp, err := c.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{
			MachineID: &empty, Password: &pw, Scenarios: testScenarios})
		return statusOf(resp), err
	})
}

// ---------------------------------------------------------------------------
// Bouncers authenticating with a certificate (go-cs-bouncer)

// bouncerConfig reads a bouncer configuration file with go-cs-bouncer's own
// reader (api_url, cert_path, key_path, ca_cert_path).
func bouncerConfig(t testing.TB, path string) csbouncer.LiveBouncer {
	t.Helper()

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b csbouncer.LiveBouncer
	if err := b.ConfigReader(f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if b.APIKey != "" || b.CertPath == "" || b.KeyPath == "" || b.CAPath == "" || b.APIUrl == "" {
		t.Fatalf("%s: want api_url, cert_path, key_path, ca_cert_path and no api_key; got %+v", path, b)
	}
	return b
}

// bouncerTLSFiles are the TLS settings of a bouncer configuration.
type bouncerTLSFiles struct{ URL, Cert, Key, CA string }

// bouncerFiles reads them from a bouncer configuration file.
func bouncerFiles(t testing.TB, cfgPath string) bouncerTLSFiles {
	t.Helper()

	cfg := bouncerConfig(t, cfgPath)
	return bouncerTLSFiles{URL: cfg.APIUrl, Cert: cfg.CertPath, Key: cfg.KeyPath, CA: cfg.CAPath}
}

// certLiveBouncer is a LiveBouncer with cert_path, key_path and
// ca_cert_path (no api_key) on lapiURL ("" keeps f.URL).
func certLiveBouncer(t testing.TB, f bouncerTLSFiles, lapiURL string) *csbouncer.LiveBouncer {
	t.Helper()

	b := &csbouncer.LiveBouncer{
		APIUrl:    f.URL,
		CertPath:  f.Cert,
		KeyPath:   f.Key,
		CAPath:    f.CA,
		UserAgent: "e2e-live-bouncer/v0.0.21",
	}
	if lapiURL != "" {
		b.APIUrl = lapiURL
	}
	if err := b.Init(); err != nil {
		t.Fatalf("LiveBouncer.Init: %v", err)
	}
	return b
}

// certStreamBouncer is the StreamBouncer counterpart (polling every
// 200ms), not started.
func certStreamBouncer(t testing.TB, f bouncerTLSFiles, lapiURL string) *csbouncer.StreamBouncer {
	t.Helper()

	b := &csbouncer.StreamBouncer{
		APIUrl:         f.URL,
		CertPath:       f.Cert,
		KeyPath:        f.Key,
		CAPath:         f.CA,
		TickerInterval: "200ms",
		UserAgent:      "e2e-cert-bouncer/v0.0.21",
	}
	if lapiURL != "" {
		b.APIUrl = lapiURL
	}
	if err := b.Init(); err != nil {
		t.Fatalf("StreamBouncer.Init: %v", err)
	}
	return b
}

// liveStatus is GET /v1/decisions?ip= through the bouncer's client; it
// returns the HTTP status (0 without an answer).
func liveStatus(lb *csbouncer.LiveBouncer, ip string) (int, []*models.Decision, error) {
	type res struct {
		code int
		ds   []*models.Decision
	}
	r, err := call("Decisions.List("+ip+")", func(ctx context.Context) (res, error) {
		out, resp, err := lb.APIClient.Decisions.List(ctx, apiclient.DecisionsListOpts{IPEquals: ip})
		var ds []*models.Decision
		if out != nil {
			ds = *out
		}
		return res{statusOf(resp), ds}, err
	})
	return r.code, r.ds, err
}

// runTrackedStream runs a configured StreamBouncer like startTrackedStream
// does for API keys, and returns the tracker and a stop function (also run
// when the test ends).
func runTrackedStream(t testing.TB, name string, b *csbouncer.StreamBouncer) (*streamTracker, func()) {
	t.Helper()

	st := &streamTracker{name: name, b: b, live: map[int64]string{}, deleted: map[int64]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	consumed := make(chan struct{})
	go func() { runErr <- b.Run(ctx) }()
	go func() {
		defer close(consumed)
		for {
			select {
			case <-ctx.Done():
				return
			case resp, open := <-b.Stream:
				if !open {
					return
				}
				st.apply(resp)
			}
		}
	}()

	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-runErr:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("%s: StreamBouncer.Run: %v", name, err)
				}
			case <-time.After(callTimeout + callGrace):
				t.Errorf("%s: StreamBouncer.Run did not return %s after cancel", name, callTimeout+callGrace)
			}
			<-consumed
		})
	}
	t.Cleanup(stop)

	return st, stop
}

// ---------------------------------------------------------------------------
// Listing

// certInfo mirrors an entry of `halapi cert list -o json`.
type certInfo struct {
	Serial  string   `json:"serial"`
	Name    string   `json:"name"`
	Role    string   `json:"role"`
	OU      []string `json:"ou"`
	Revoked bool     `json:"revoked"`
}

func listCerts(t testing.TB, nd *ClusterNode) []certInfo {
	t.Helper()

	out := nd.MustCLI("cert", "list", "-o", "json")
	var certs []certInfo
	if err := json.Unmarshal([]byte(out), &certs); err != nil {
		t.Fatalf("cert list -o json: %v\n%s", err, out)
	}
	return certs
}
