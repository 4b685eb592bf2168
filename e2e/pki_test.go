package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// The built-in PKI end to end, with the real clients: a secure cluster
// formed with one-time join tokens; agents and bouncers authenticating with
// certificates from `halapi cert issue` and `halapi agent enroll` on every
// node; role (OU) checks; revocation enforced by every node as soon as
// `cert revoke` returns.
func TestPKIClusterAndCertAuth(t *testing.T) {
	sc := newSecureCluster(t)
	n1 := sc.Found()

	tok1 := sc.JoinToken(n1)
	out := sc.RefusedJoin("wrong join token (right CA fingerprint, wrong secret)", tamperJoinToken(t, tok1), n1)
	t.Logf("wrong join token refused: %s", lastLine(out))
	n2 := sc.Join(tok1, n1)
	tok2 := sc.JoinToken(n2)
	n3 := sc.Join(tok2, n2)
	// each token worked once, cluster-wide
	out = sc.RefusedJoin("n1's join token reused at n3", tok1, n3)
	t.Logf("reused join token refused: %s", lastLine(out))
	sc.RefusedJoin("n2's join token reused at n2", tok2, n2)
	nodes := sc.Nodes

	rootPEM, err := os.ReadFile(sc.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range nodes[1:] {
		b, err := os.ReadFile(filepath.Join(nd.DataDir, "pki", "ca.crt"))
		if err != nil || !bytes.Equal(b, rootPEM) {
			t.Fatalf("%s: DATA/pki/ca.crt is not the cluster root (%v)", nd.ID, err)
		}
	}

	// Client certificates, issued on different nodes.
	fw := issueCert(t, n2, "bouncer", "fw1", n1.URL)
	ag := issueCert(t, n3, "agent", "ag1", n1.URL)
	checkLeaf(t, fw.Cert, "fw1", "bouncer-ou")
	checkLeaf(t, ag.Cert, "ag1", "agent-ou")
	for _, ic := range []issuedCert{fw, ag} {
		if b, _ := os.ReadFile(ic.CA); !bytes.Equal(b, rootPEM) {
			t.Fatalf("%s: ca.crt is not the cluster root", ic.Dir)
		}
	}
	fwFiles := bouncerFiles(t, fw.Cfg)
	if fwFiles.URL != n1.URL {
		t.Errorf("bouncer-tls.yaml api_url = %q, want the -u URL %q", fwFiles.URL, n1.URL)
	}
	creds := loadAgentCredentials(t, ag.Cfg)
	if creds.URL != n1.URL {
		t.Errorf("local_api_credentials.yaml url = %q, want the -u URL %q", creds.URL, n1.URL)
	}

	// Concurrent first use of one certificate on every node (a bouncer or
	// agent behind a load balancer, several bouncers on one host): every
	// node must accept it while the nodes create the same `<CN>@<ip>` row.
	t.Run("concurrent first use", func(t *testing.T) {
		// A few rounds with fresh names: the window is a raft round trip.
		for round := 1; round <= 3; round++ {
			concurrentFirstUse(t, n1, nodes, fmt.Sprintf("race%d-fw", round), fmt.Sprintf("race%d-ag", round))
		}
	})

	// First use of fw1 and ag1 on n1 alone, and the rows replicated, before
	// they are used everywhere at once (see the subtest above).
	if code, _, err := liveStatus(certLiveBouncer(t, fwFiles, n1.URL), "192.0.2.1"); code != http.StatusOK {
		t.Fatalf("n1: first use of the fw1 bouncer certificate: status %d (err %v), want 200", code, err)
	}
	if code, err := certLogin(newCertAgent(t, creds, n1.URL)); code != http.StatusOK {
		t.Fatalf("n1: first login with the ag1 agent certificate: status %d (err %v), want 200", code, err)
	}
	for _, nd := range nodes {
		nd.waitListed("machines", "ag1@127.0.0.1", "created by the certificate login, auth type tls", fieldIs("auth_type", "tls"))
		nd.waitListed("bouncers", "fw1@127.0.0.1", "created by the certificate, auth type tls", fieldIs("auth_type", "tls"))
	}

	// On every node: stream and live bouncers (certificate) see the
	// decisions an agent (certificate) pushes on every node. Each stream
	// bouncer has its own certificate, issued by its node: a stream cursor
	// belongs to one bouncer identity (`<CN>@<ip>`), so stream bouncers
	// sharing one would skip each other's decisions (as with CrowdSec's
	// shared last_pull). The live bouncers all use fw1.
	streams := make([]*streamTracker, len(nodes))
	stopStreams := make([]func(), len(nodes))
	lives := make([]*csbouncer.LiveBouncer, len(nodes))
	agents := make([]*apiclient.ApiClient, len(nodes))
	for i, nd := range nodes {
		sf := bouncerFiles(t, issueCert(t, nd, "bouncer", "fw-"+nd.ID, nd.URL).Cfg)
		streams[i], stopStreams[i] = runTrackedStream(t, "fw-"+nd.ID+" stream bouncer on "+nd.ID, certStreamBouncer(t, sf, nd.URL))
		lives[i] = certLiveBouncer(t, fwFiles, nd.URL)
		agents[i] = newCertAgent(t, creds, nd.URL)
	}
	want := map[string]bool{}
	var ips []string
	for i, nd := range nodes {
		ip := fmt.Sprintf("192.0.2.%d", 10+i)
		if err := tryAddDecision(agents[i], ip); err != nil {
			t.Fatalf("agent ag1 (certificate) pushing a decision on %s: %v", nd.ID, err)
		}
		want[ip] = true
		ips = append(ips, ip)
	}
	for _, st := range streams {
		st.waitValues(t, convergeTimeout, want)
	}
	for i, nd := range nodes {
		for _, ip := range ips {
			waitFor(t, convergeTimeout, "fw1 live bouncer on "+nd.ID+" sees the ban on "+ip, func() (bool, string) {
				code, ds, err := liveStatus(lives[i], ip)
				if err != nil || code != http.StatusOK {
					return false, fmt.Sprintf("status %d, err %v", code, err)
				}
				return valueSet(ds)[ip], fmt.Sprintf("%d decisions: %v", len(ds), valueSet(ds))
			})
		}
	}

	// Wrong role: an agent certificate on bouncer routes is forbidden, a
	// bouncer certificate cannot log in as a machine.
	agFilesAsBouncer := bouncerTLSFiles{Cert: ag.Cert, Key: ag.Key, CA: ag.CA}
	fwCredsAsAgent := agentCredentials{URL: n1.URL, CACertPath: fw.CA, CertPath: fw.Cert, KeyPath: fw.Key}
	for _, nd := range nodes {
		code, _, err := liveStatus(certLiveBouncer(t, agFilesAsBouncer, nd.URL), ips[0])
		if code != http.StatusForbidden {
			t.Errorf("%s: agent certificate (OU agent-ou) used by a bouncer: GET /v1/decisions status %d (err %v), want 403", nd.ID, code, err)
		}
		code, err = certLogin(newCertAgent(t, fwCredsAsAgent, nd.URL))
		if code != http.StatusUnauthorized {
			t.Errorf("%s: bouncer certificate (OU bouncer-ou) used by an agent: POST /v1/watchers/login status %d (err %v), want 401", nd.ID, code, err)
		}
		// the right certificate still logs in
		if code, err := certLogin(newCertAgent(t, creds, nd.URL)); code != http.StatusOK {
			t.Errorf("%s: agent certificate login: status %d (err %v), want 200", nd.ID, code, err)
		}
	}

	// Revocation: fw1 is refused by every node right after `cert revoke`
	// returns, on the bouncers' open keep-alive connections and on new ones;
	// the other bouncers' streams go on.
	for i, nd := range nodes {
		if code, _, err := liveStatus(lives[i], ips[0]); code != http.StatusOK {
			t.Fatalf("%s: fw1 before revocation: status %d (err %v)", nd.ID, code, err)
		}
	}
	answers := make([]int, len(streams))
	for i, st := range streams {
		answers[i] = st.answerCount()
	}
	out = n3.MustCLI("cert", "revoke", "--name", "fw1")
	t.Logf("cert revoke --name fw1 on n3: %s", strings.TrimSpace(out))
	for i, nd := range nodes {
		if code, _, err := liveStatus(lives[i], ips[0]); code != http.StatusForbidden {
			t.Errorf("%s: revoked fw1 on its open connection: GET /v1/decisions status %d (err %v), want 403", nd.ID, code, err)
		}
		if code, _, err := liveStatus(certLiveBouncer(t, fwFiles, nd.URL), ips[0]); code != http.StatusForbidden {
			t.Errorf("%s: revoked fw1 on a new connection: GET /v1/decisions status %d (err %v), want 403", nd.ID, code, err)
		}
		sb := certStreamBouncer(t, fwFiles, nd.URL)
		_, err := call("StreamBouncer.Run(revoked)", func(ctx context.Context) (struct{}, error) {
			return struct{}{}, sb.Run(ctx)
		})
		var apiErr *apiclient.ErrorResponse
		if !errors.As(err, &apiErr) {
			t.Errorf("%s: StreamBouncer with the revoked fw1 certificate: Run returned %v, want the LAPI's refusal", nd.ID, err)
		}
		// the agent's certificate was not revoked
		if code, err := certLogin(newCertAgent(t, creds, nd.URL)); code != http.StatusOK {
			t.Errorf("%s: agent certificate login after fw1's revocation: status %d (err %v), want 200", nd.ID, code, err)
		}
	}
	for i, st := range streams {
		waitFor(t, convergeTimeout, st.name+" still answered after fw1's revocation", func() (bool, string) {
			return st.answerCount() >= answers[i]+3, fmt.Sprintf("%d answers, %d before", st.answerCount(), answers[i])
		})
		stopStreams[i]()
		if p := st.problems(); len(p) > 0 {
			t.Errorf("%s: %v", st.name, p)
		}
	}
	var fwRevoked, agRevoked bool
	for _, c := range listCerts(t, n1) {
		switch c.Name {
		case "fw1":
			fwRevoked = c.Revoked
		case "ag1":
			agRevoked = c.Revoked
		}
	}
	if !fwRevoked || agRevoked {
		t.Errorf("cert list on n1: fw1 revoked=%v (want true), ag1 revoked=%v (want false)", fwRevoked, agRevoked)
	}

	// Enrollment with one-time tokens (`cert token` + `agent enroll`), each
	// token used on one node and refused afterwards on the same node and on
	// another one.
	t.Run("enroll", func(t *testing.T) {
		bTok := strings.TrimSpace(n3.MustCLI("cert", "token", "bouncer", "enr-fw"))
		aTok := strings.TrimSpace(n1.MustCLI("cert", "token", "agent", "enr-ag"))

		bDir := filepath.Join(t.TempDir(), "bouncer")
		if _, err := halapiCmd("agent", "enroll", "--url", n2.URL, "--token", bTok, "--out", bDir); err != nil {
			t.Fatal(err)
		}
		enrB := clientFiles(t, "bouncer", "enr-fw", bDir)
		checkLeaf(t, enrB.Cert, "enr-fw", "bouncer-ou")
		enrBFiles := bouncerFiles(t, enrB.Cfg)
		aDir := filepath.Join(t.TempDir(), "agent")
		if _, err := halapiCmd("agent", "enroll", "--url", n3.URL, "--token", aTok, "--out", aDir); err != nil {
			t.Fatal(err)
		}
		enrA := clientFiles(t, "agent", "enr-ag", aDir)
		checkLeaf(t, enrA.Cert, "enr-ag", "agent-ou")
		enrCreds := loadAgentCredentials(t, enrA.Cfg)

		for _, nd := range nodes {
			code, ds, err := liveStatus(certLiveBouncer(t, enrBFiles, nd.URL), ips[1])
			if code != http.StatusOK || !valueSet(ds)[ips[1]] {
				t.Errorf("%s: enrolled bouncer: status %d, decisions %v, err %v; want 200 with %s", nd.ID, code, valueSet(ds), err, ips[1])
			}
			if code, err := certLogin(newCertAgent(t, enrCreds, nd.URL)); code != http.StatusOK {
				t.Errorf("%s: enrolled agent login: status %d (err %v), want 200", nd.ID, code, err)
			}
		}

		for _, reuse := range []struct {
			what, tok string
			at        *ClusterNode
		}{
			{"bouncer token again at n2 (same node)", bTok, n2},
			{"bouncer token again at n1 (another node)", bTok, n1},
			{"agent token again at n3 (same node)", aTok, n3},
			{"agent token again at n2 (another node)", aTok, n2},
		} {
			_, err := halapiCmd("agent", "enroll", "--url", reuse.at.URL, "--token", reuse.tok, "--out", t.TempDir())
			if err == nil {
				t.Errorf("%s: enrollment succeeded, want the used token refused", reuse.what)
				continue
			}
			t.Logf("%s: refused: %s", reuse.what, lastLine(err.Error()))
		}
	})
}

// concurrentFirstUse issues a bouncer and an agent certificate on issuer
// and uses each for the first time on every node at once: a bouncer query
// and a machine login (apiclient.NewDefaultClient, no retries). Every node
// must answer 200 while the nodes create the same `<CN>@127.0.0.1` rows.
func concurrentFirstUse(t *testing.T, issuer *ClusterNode, nodes []*ClusterNode, bouncer, agent string) {
	t.Helper()

	rb := bouncerFiles(t, issueCert(t, issuer, "bouncer", bouncer, issuer.URL).Cfg)
	ra := loadAgentCredentials(t, issueCert(t, issuer, "agent", agent, issuer.URL).Cfg)
	type first struct {
		bouncer, login       int
		bouncerErr, loginErr error
	}
	got := make([]first, len(nodes))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, nd := range nodes {
		lb := certLiveBouncer(t, rb, nd.URL)
		dc := newCertDefaultClient(t, ra, nd.URL)
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			got[i].bouncer, _, got[i].bouncerErr = liveStatus(lb, "192.0.2.1")
		}()
		go func() {
			defer wg.Done()
			<-start
			got[i].login, got[i].loginErr = certLogin(dc)
		}()
	}
	close(start)
	wg.Wait()
	for i, nd := range nodes {
		if got[i].bouncer != http.StatusOK {
			t.Errorf("%s: first GET /v1/decisions with bouncer certificate %s, concurrent with the other nodes: status %d, want 200 (err: %v)",
				nd.ID, bouncer, got[i].bouncer, got[i].bouncerErr)
		}
		if got[i].login != http.StatusOK {
			t.Errorf("%s: first POST /v1/watchers/login with agent certificate %s, concurrent with the other nodes: status %d, want 200 (err: %v)",
				nd.ID, agent, got[i].login, got[i].loginErr)
		}
	}
}

// checkLeaf checks a certificate's CN and OU.
func checkLeaf(t testing.TB, path, cn, ou string) {
	t.Helper()

	leaf := leafOf(t, path)
	if leaf.Subject.CommonName != cn || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{ou}) {
		t.Fatalf("%s: subject %v, want CN %s and OU %s", path, leaf.Subject, cn, ou)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// ---------------------------------------------------------------------------
// The real step CLI against a halapi cluster

// stepBinary is $HALAPI_STEP (`make e2e` builds it into bin/step).
func stepBinary(t *testing.T) string {
	t.Helper()

	p := os.Getenv("HALAPI_STEP")
	if p == "" {
		t.Skip("HALAPI_STEP is not set: this test needs the step CLI " +
			"(`make tools` installs it into bin/step and `make e2e` sets HALAPI_STEP; or " +
			"GOBIN=$PWD/bin go install github.com/smallstep/cli/cmd/step@v0.29.0)")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("HALAPI_STEP: %v", err)
	}
	return p
}

// `step ca certificate` with a halapi token against any node gives a
// certificate with the role's OU that authenticates to the LAPI; a token
// works once; `step ca renew` works over mTLS.
func TestStepCLI(t *testing.T) {
	step := stepBinary(t)
	sc := startSecureCluster(t, 3)
	n1, n2, n3 := sc.Node(1), sc.Node(2), sc.Node(3)
	root := sc.CAFile
	dir := t.TempDir()

	runStep := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, step, args...)
		cmd.Env = append(os.Environ(), "STEPPATH="+filepath.Join(dir, "step"), "HOME="+dir)
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %s", cliTimeout)
		}
		if err != nil {
			return string(out), fmt.Errorf("step %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	caURL := func(nd *ClusterNode) string { return strings.TrimSuffix(nd.URL, "/") }

	// A bouncer certificate from node 2, with a token minted on node 1.
	bTok := strings.TrimSpace(n1.MustCLI("cert", "token", "bouncer", "step-fw"))
	bCrt, bKey := filepath.Join(dir, "step-fw.crt"), filepath.Join(dir, "step-fw.key")
	if _, err := runStep("ca", "certificate", "step-fw", bCrt, bKey, "--token", bTok, "--ca-url", caURL(n2), "--root", root); err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, bCrt, "step-fw", "bouncer-ou")
	bFiles := bouncerTLSFiles{Cert: bCrt, Key: bKey, CA: root}
	n1.MustCLI("decisions", "add", "--ip", "192.0.2.80", "--reason", "e2e/step")
	for _, nd := range sc.Nodes {
		lb := certLiveBouncer(t, bFiles, nd.URL)
		waitFor(t, convergeTimeout, "step-issued bouncer certificate on "+nd.ID+" sees 192.0.2.80", func() (bool, string) {
			code, ds, err := liveStatus(lb, "192.0.2.80")
			return code == http.StatusOK && valueSet(ds)["192.0.2.80"], fmt.Sprintf("status %d, %v, err %v", code, valueSet(ds), err)
		})
	}

	// An agent certificate from node 3, with a token minted on node 2.
	aTok := strings.TrimSpace(n2.MustCLI("cert", "token", "agent", "step-ag"))
	aCrt, aKey := filepath.Join(dir, "step-ag.crt"), filepath.Join(dir, "step-ag.key")
	if _, err := runStep("ca", "certificate", "step-ag", aCrt, aKey, "--token", aTok, "--ca-url", caURL(n3), "--root", root); err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, aCrt, "step-ag", "agent-ou")
	aCreds := agentCredentials{CACertPath: root, CertPath: aCrt, KeyPath: aKey}
	for _, nd := range sc.Nodes {
		if code, err := certLogin(newCertAgent(t, aCreds, nd.URL)); code != http.StatusOK {
			t.Errorf("%s: step-issued agent certificate login: status %d (err %v), want 200", nd.ID, code, err)
		}
	}
	if err := tryAddDecision(newCertAgent(t, aCreds, n3.URL), "192.0.2.81"); err != nil {
		t.Errorf("n3: step-issued agent certificate pushing a decision: %v", err)
	}

	// Each token works once, on any node.
	for _, reuse := range []struct {
		what, tok, name string
		at              *ClusterNode
	}{
		{"bouncer token again at n3 (another node)", bTok, "step-fw", n3},
		{"agent token again at n3 (same node)", aTok, "step-ag", n3},
	} {
		out, err := runStep("ca", "certificate", reuse.name, filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key"),
			"--token", reuse.tok, "--ca-url", caURL(reuse.at), "--root", root, "--force")
		if err == nil {
			t.Errorf("%s: step ca certificate succeeded, want the used token refused:\n%s", reuse.what, out)
			continue
		}
		t.Logf("%s: refused: %s", reuse.what, strings.Join(strings.Fields(out), " "))
	}

	// Renewal over mTLS, on another node than the one that issued.
	for _, r := range []struct {
		crt, key, cn, ou string
		at               *ClusterNode
	}{
		{aCrt, aKey, "step-ag", "agent-ou", n2},
		{bCrt, bKey, "step-fw", "bouncer-ou", n1},
	} {
		before := leafOf(t, r.crt)
		if _, err := runStep("ca", "renew", r.crt, r.key, "--ca-url", caURL(r.at), "--root", root, "--force"); err != nil {
			t.Fatal(err)
		}
		after := leafOf(t, r.crt)
		if after.SerialNumber.Cmp(before.SerialNumber) == 0 {
			t.Errorf("step ca renew %s at %s: same serial %s", r.cn, r.at.ID, after.SerialNumber)
		}
		checkLeaf(t, r.crt, r.cn, r.ou)
	}
	for _, nd := range sc.Nodes {
		if code, err := certLogin(newCertAgent(t, aCreds, nd.URL)); code != http.StatusOK {
			t.Errorf("%s: renewed agent certificate login: status %d (err %v), want 200", nd.ID, code, err)
		}
		if code, ds, err := liveStatus(certLiveBouncer(t, bFiles, nd.URL), "192.0.2.80"); code != http.StatusOK || !valueSet(ds)["192.0.2.80"] {
			t.Errorf("%s: renewed bouncer certificate: status %d, %v, err %v", nd.ID, code, valueSet(ds), err)
		}
	}
}

// ---------------------------------------------------------------------------
// Node certificate renewal under load

// nodeCertTTL is the node certificate lifetime of TestNodeCertRenewalUnderLoad
// (renewal at two thirds of it). The CA's provisioner refuses lifetimes
// shorter than min(5m, max(--client-cert-ttl, --node-cert-ttl)), so the test
// lowers --client-cert-ttl to the same value: with the default client TTL
// (one year) a 30s node certificate is never issued.
const nodeCertTTL = 30 * time.Second

// loadClient is one bouncer issuing GET /v1/decisions in a loop, recording
// failures and the serial of the certificate each answer came over.
type loadClient struct {
	name string
	lb   *csbouncer.LiveBouncer

	mu       sync.Mutex
	ok       int
	failures []string
	certs    []*x509.Certificate // served, distinct, in order of appearance
}

func (lc *loadClient) run(stop <-chan struct{}, ip string) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		type res struct {
			code  int
			cert  *x509.Certificate
			found bool
		}
		r, err := call(lc.name, func(ctx context.Context) (res, error) {
			ds, resp, err := lc.lb.APIClient.Decisions.List(ctx, apiclient.DecisionsListOpts{IPEquals: ip})
			var r res
			r.code = statusOf(resp)
			if resp != nil && resp.Response != nil && resp.Response.TLS != nil && len(resp.Response.TLS.PeerCertificates) > 0 {
				r.cert = resp.Response.TLS.PeerCertificates[0]
			}
			if ds != nil {
				r.found = valueSet(*ds)[ip]
			}
			return r, err
		})
		lc.mu.Lock()
		switch {
		case err != nil || r.code != http.StatusOK:
			lc.failures = append(lc.failures, fmt.Sprintf("%s: status %d, err %v", time.Now().Format("15:04:05.000"), r.code, err))
		case !r.found:
			lc.failures = append(lc.failures, fmt.Sprintf("%s: 200 without the ban on %s", time.Now().Format("15:04:05.000"), ip))
		default:
			lc.ok++
			if r.cert == nil {
				lc.failures = append(lc.failures, "answer without a TLS peer certificate")
			} else if n := len(lc.certs); n == 0 || lc.certs[n-1].SerialNumber.Cmp(r.cert.SerialNumber) != 0 {
				lc.certs = append(lc.certs, r.cert)
			}
		}
		lc.mu.Unlock()
	}
}

func (lc *loadClient) snapshot() (ok int, failures []string, certs []*x509.Certificate) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.ok, append([]string(nil), lc.failures...), append([]*x509.Certificate(nil), lc.certs...)
}

// Node certificates are renewed at two thirds of their lifetime and
// hot-swapped: bouncers querying a node over keep-alive and over new
// connections see no failed request while the served certificate changes,
// and the cluster (mTLS between nodes) keeps replicating.
func TestNodeCertRenewalUnderLoad(t *testing.T) {
	ttl := nodeCertTTL.String()
	sc := startSecureCluster(t, 2, "--node-cert-ttl", ttl, "--client-cert-ttl", ttl)
	n1, n2 := sc.Node(1), sc.Node(2)

	const key = "e2e-renewal-load-key-0123456789"
	const ip = "192.0.2.90"
	addBouncer(t, n1.Server, "load", key)
	n1.MustCLI("decisions", "add", "--ip", ip, "--reason", "e2e/renewal")

	var clients []*loadClient
	for _, nd := range sc.Nodes {
		for _, keepAlive := range []bool{true, false} {
			lb := &csbouncer.LiveBouncer{APIKey: key, APIUrl: nd.URL, CAPath: sc.CAFile, UserAgent: "e2e-load-bouncer/v0.0.21"}
			if err := lb.Init(); err != nil {
				t.Fatalf("LiveBouncer.Init: %v", err)
			}
			name := nd.ID + " keep-alive"
			if !keepAlive {
				name = nd.ID + " new connection per request"
				kt, ok := lb.APIClient.GetClient().Transport.(*apiclient.APIKeyTransport)
				if !ok {
					t.Fatalf("bouncer transport is %T", lb.APIClient.GetClient().Transport)
				}
				ht, ok := kt.Transport.(*http.Transport)
				if !ok {
					t.Fatalf("bouncer inner transport is %T", kt.Transport)
				}
				ht.DisableKeepAlives = true
			}
			lc := &loadClient{name: name, lb: lb}
			waitFor(t, convergeTimeout, lc.name+": bouncer sees the ban on "+ip, func() (bool, string) {
				code, ds, err := liveStatus(lb, ip)
				return code == http.StatusOK && valueSet(ds)[ip], fmt.Sprintf("status %d, %v, err %v", code, valueSet(ds), err)
			})
			clients = append(clients, lc)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, lc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc.run(stop, ip)
		}()
	}
	stopped := false
	stopLoad := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopLoad()

	// Every node's served certificate changes at least once: the clients
	// that open a new connection per request see a second serial. A renewal
	// happens every 2/3 ttl; wait for it, then keep the load on a little
	// longer so requests run on connections opened after it.
	started := time.Now()
	waitFor(t, 2*nodeCertTTL, "every node serves a renewed certificate to the new-connection clients", func() (bool, string) {
		var descr []string
		done := true
		for _, lc := range clients {
			ok, failures, certs := lc.snapshot()
			descr = append(descr, fmt.Sprintf("%s: %d ok, %d failed, %d certificates", lc.name, ok, len(failures), len(certs)))
			if strings.HasSuffix(lc.name, "per request") && len(certs) < 2 {
				done = false
			}
		}
		return done, strings.Join(descr, "; ")
	})
	base := make([]int, len(clients))
	for i, lc := range clients {
		base[i], _, _ = lc.snapshot()
	}
	waitFor(t, convergeTimeout, "every client makes 50 more requests after the renewal", func() (bool, string) {
		var descr []string
		done := true
		for i, lc := range clients {
			ok, _, _ := lc.snapshot()
			descr = append(descr, fmt.Sprintf("%s: %d", lc.name, ok-base[i]))
			done = done && ok-base[i] >= 50
		}
		return done, strings.Join(descr, "; ")
	})
	stopLoad()
	t.Logf("load ran %s across the renewal", time.Since(started).Round(time.Millisecond))

	for _, lc := range clients {
		ok, failures, certs := lc.snapshot()
		var served []string
		for i, c := range certs {
			served = append(served, fmt.Sprintf("%s [%s, %s]", c.SerialNumber, c.NotBefore.Format("15:04:05"), c.NotAfter.Format("15:04:05")))
			if life := c.NotAfter.Sub(c.NotBefore); life != nodeCertTTL {
				t.Errorf("%s: served certificate %s lives %s, want --node-cert-ttl %s", lc.name, c.SerialNumber, life, nodeCertTTL)
			}
			if i > 0 && !c.NotBefore.Before(certs[i-1].NotAfter) {
				t.Errorf("%s: certificate %s issued at %s, after the previous one expired at %s (renewal at 2/3 of the lifetime expected)",
					lc.name, c.SerialNumber, c.NotBefore, certs[i-1].NotAfter)
			}
		}
		t.Logf("%s: %d requests ok, %d failed, served certificates %v", lc.name, ok, len(failures), served)
		if len(failures) > 0 {
			t.Errorf("%s: %d failed requests during the renewal, first ones: %v", lc.name, len(failures), failures[:min(5, len(failures))])
		}
		if ok == 0 {
			t.Errorf("%s: no successful request", lc.name)
		}
	}
	for _, nd := range sc.Nodes {
		if !nd.running() {
			t.Errorf("%s exited during the renewal (the certificate must be hot-swapped)", nd.ID)
		}
		log, _ := os.ReadFile(nd.logPath)
		if !bytes.Contains(log, []byte("node certificate renewed")) {
			t.Errorf("%s: no \"node certificate renewed\" in its log", nd.ID)
		}
	}

	// The cluster still works after the renewal: a write on the follower
	// reaches the other node, members are alive voters.
	sc.WaitStable(clusterFormTimeout, sc.Nodes...)
	sc.CheckMembersAlive(gossipSettle, sc.Nodes...)
	n2.MustCLI("decisions", "add", "--ip", "192.0.2.91", "--reason", "e2e/renewal")
	lb := &csbouncer.LiveBouncer{APIKey: key, APIUrl: n1.URL, CAPath: sc.CAFile, UserAgent: "e2e-load-bouncer/v0.0.21"}
	if err := lb.Init(); err != nil {
		t.Fatalf("LiveBouncer.Init: %v", err)
	}
	waitFor(t, convergeTimeout, "n1 serves the decision added on n2 after the renewal", func() (bool, string) {
		code, ds, err := liveStatus(lb, "192.0.2.91")
		return code == http.StatusOK && valueSet(ds)["192.0.2.91"], fmt.Sprintf("status %d, %v, err %v", code, valueSet(ds), err)
	})
}
