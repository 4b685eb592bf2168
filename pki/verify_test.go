package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// whoami answers the identity Verify finds for the role in the path.
func whoami(v *ClientVerifier) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role := Role(strings.TrimPrefix(r.URL.Path, "/whoami/"))
		id, err := v.Verify(r.TLS, role)
		if err != nil {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, err.Error())
			return
		}
		_, _ = io.WriteString(w, id)
	})
}

func call(t *testing.T, ca *CA, srv string, cert *tls.Certificate, role Role) (int, string) {
	t.Helper()
	resp, err := tlsClient(ca, cert).Get(srv + "/whoami/" + string(role))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func clientCert(t *testing.T, ca *CA, role Role, name string) (tls.Certificate, string) {
	t.Helper()
	certPEM, keyPEM, serial, err := ca.IssueClient(role, name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, serial
}

func TestClientVerifierRoles(t *testing.T) {
	c := newCluster(t)
	// the verifier runs on node B, certificates come from node A
	v, err := NewClientVerifier(c.r.fsms[1], VerifierConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, c.b, v, whoami(v)).URL
	agent, agentSerial := clientCert(t, c.a, RoleAgent, "agent-1")
	bouncer, _ := clientCert(t, c.a, RoleBouncer, "fw-1")
	node, err := c.a.IssueServer("node9", nil)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		cert *tls.Certificate
		role Role
		code int
		body string
	}{
		{&agent, RoleAgent, 200, "agent-1"},
		{&agent, RoleBouncer, 403, "doesn't match expected OU"},
		{&bouncer, RoleBouncer, 200, "fw-1"},
		{&bouncer, RoleAgent, 403, "doesn't match expected OU"},
		{&node, RoleAgent, 403, "doesn't match expected OU"},
		{nil, RoleAgent, 403, ErrNoClientCert.Error()},
	} {
		code, body := call(t, c.a, srv, tc.cert, tc.role)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("role %s: %d %q, want %d %q", tc.role, code, body, tc.code, tc.body)
		}
	}

	// revoked on node A: refused by node B's verifier at the next request
	if err := c.a.Revoke(t.Context(), agentSerial, ""); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, c.a, srv, &agent, RoleAgent); code != 403 || !strings.Contains(body, "revoked") {
		t.Errorf("revoked agent: %d %q", code, body)
	}

	// expired (the verifier's clock moves past NotAfter)
	v.now = func() time.Time { return bouncer.Leaf.NotAfter.Add(time.Hour) }
	if code, body := call(t, c.a, srv, &bouncer, RoleBouncer); code != 403 || !strings.Contains(body, "expired") {
		t.Errorf("expired bouncer: %d %q", code, body)
	}
	v.now = time.Now

	// unknown CA: the TLS layer refuses the handshake...
	other := newCluster(t)
	stranger, _ := clientCert(t, other.a, RoleAgent, "agent-1")
	if code, body := call(t, c.a, srv, &stranger, RoleAgent); code != 0 {
		t.Errorf("certificate of an unknown CA: %d %q", code, body)
	}
	// ...and a connection that carries it without a verified chain (a
	// listener in RequestClientCert mode) is refused by Verify
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{stranger.Leaf}}
	if _, err := v.Verify(cs, RoleAgent); err == nil || !strings.Contains(err.Error(), "no verified cert") {
		t.Errorf("unverified chain: %v", err)
	}
	if _, err := v.Verify(nil, RoleAgent); !errors.Is(err, ErrNoClientCert) {
		t.Errorf("no TLS: %v", err)
	}
}

func TestClientVerifierConfig(t *testing.T) {
	if _, err := NewClientVerifier(nil, VerifierConfig{AgentOUs: []string{"a", ""}}); err == nil ||
		!strings.Contains(err.Error(), "allowed_ou configuration contains invalid empty string") {
		t.Errorf("empty OU: %v", err)
	}
	v, err := NewClientVerifier(nil, VerifierConfig{AgentOUs: []string{"a", "b", "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(v.agentOUs, ",") != "a,b" || strings.Join(v.bouncerOUs, ",") != DefaultBouncerOU {
		t.Errorf("OUs %v %v", v.agentOUs, v.bouncerOUs)
	}
	if _, err := NewClientVerifier(nil, VerifierConfig{CRLPath: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Error("missing CRL file accepted")
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not a crl"), 0o600)
	if _, err := NewClientVerifier(nil, VerifierConfig{CRLPath: bad}); err == nil {
		t.Error("unparsable CRL file accepted")
	}
}

// An external CA trusted through a CA bundle, with its CRL file.
func TestClientVerifierExternalCA(t *testing.T) {
	c := newCluster(t)
	ext := newCluster(t) // stands for any external CA
	good, _ := clientCert(t, ext.a, RoleAgent, "ext-good")
	bad, badSerial := clientCert(t, ext.a, RoleAgent, "ext-bad")
	if err := ext.a.Revoke(t.Context(), badSerial, ""); err != nil {
		t.Fatal(err)
	}
	der, err := ext.a.CRL()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle := filepath.Join(dir, "ext-ca.pem")
	crl := filepath.Join(dir, "ext.crl")
	if err := os.WriteFile(bundle, ext.a.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crl, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := NewClientVerifier(c.r.fsms[0], VerifierConfig{CABundles: []string{bundle}, CRLPath: crl, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, c.a, v, whoami(v)).URL
	if code, body := call(t, c.a, srv, &good, RoleAgent); code != 200 || body != "ext-good" {
		t.Errorf("external CA certificate: %d %q", code, body)
	}
	if code, body := call(t, c.a, srv, &bad, RoleAgent); code != 403 || !strings.Contains(body, "revoked by CRL") {
		t.Errorf("certificate in the external CRL: %d %q", code, body)
	}
	// our own CA still works next to the bundle
	own, _ := clientCert(t, c.a, RoleAgent, "own")
	if code, body := call(t, c.a, srv, &own, RoleAgent); code != 200 || body != "own" {
		t.Errorf("cluster CA certificate: %d %q", code, body)
	}
}

// A verifier built before the CA reaches this replica (a joining node)
// trusts the cluster root once it arrives.
func TestClientVerifierPicksUpCA(t *testing.T) {
	r := newReplicas(2)
	v, err := NewClientVerifier(r.fsms[1], VerifierConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	before := v.ClientCAs()
	if err := Bootstrap(t.Context(), r.fsms[0], r, testOptions()); err != nil {
		t.Fatal(err)
	}
	ca, err := New(r.fsms[0], r, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	after := v.ClientCAs()
	if before.Equal(after) {
		t.Fatal("pool did not pick up the cluster root")
	}
	agent, _ := clientCert(t, ca, RoleAgent, "late")
	if _, err := agent.Leaf.Verify(x509.VerifyOptions{Roots: after, Intermediates: poolOf(t, agent),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Error(err)
	}
}

func poolOf(t *testing.T, c tls.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, der := range c.Certificate[1:] {
		crt, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		p.AddCert(crt)
	}
	return p
}
