package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Operator certificates: accepted for RoleAdmin only, from the cluster CA
// only, and never for an agent or a bouncer.
func TestAdminCertificateRole(t *testing.T) {
	c := newCluster(t)
	v, err := NewClientVerifier(c.r.fsms[1], VerifierConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, c.b, v, whoami(v)).URL
	adm, admSerial := clientCert(t, c.a, RoleAdmin, "alice")
	agent, _ := clientCert(t, c.a, RoleAgent, "agent-1")
	bouncer, _ := clientCert(t, c.a, RoleBouncer, "fw-1")
	node, err := c.a.IssueServer("node9", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(adm.Leaf.Subject.OrganizationalUnit, []string{DefaultAdminOU}) {
		t.Fatalf("admin certificate OU %v", adm.Leaf.Subject.OrganizationalUnit)
	}
	for _, tc := range []struct {
		what string
		cert *tls.Certificate
		role Role
		code int
		body string
	}{
		{"admin as admin", &adm, RoleAdmin, 200, "alice"},
		{"admin as agent", &adm, RoleAgent, 403, "doesn't match expected OU"},
		{"admin as bouncer", &adm, RoleBouncer, 403, "doesn't match expected OU"},
		{"agent as admin", &agent, RoleAdmin, 403, "doesn't match expected OU"},
		{"bouncer as admin", &bouncer, RoleAdmin, 403, "doesn't match expected OU"},
		{"node as admin", &node, RoleAdmin, 403, "doesn't match expected OU"},
		{"none as admin", nil, RoleAdmin, 403, ErrNoClientCert.Error()},
	} {
		code, body := call(t, c.a, srv, tc.cert, tc.role)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.what, code, body, tc.code, tc.body)
		}
	}
	if roles := listRoles(c.a); roles["alice"] != RoleAdmin {
		t.Errorf("cert list role of alice = %q", roles["alice"])
	}

	// a listener that only requests certificates (no verified chain):
	// the genuine certificate still passes, a forged one with the admin
	// OU does not
	cs := &tls.ConnectionState{PeerCertificates: leafAndChain(t, adm)}
	if id, err := v.Verify(cs, RoleAdmin); err != nil || id != "alice" {
		t.Errorf("unverified connection, genuine admin certificate: %q %v", id, err)
	}
	forged := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{selfSigned(t, "mallory", DefaultAdminOU)}}
	if _, err := v.Verify(forged, RoleAdmin); err == nil || !strings.Contains(err.Error(), "not issued by the cluster CA") {
		t.Errorf("forged admin certificate: %v", err)
	}

	// expired
	v.now = func() time.Time { return adm.Leaf.NotAfter.Add(time.Hour) }
	if _, err := v.Verify(cs, RoleAdmin); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired admin certificate: %v", err)
	}
	v.now = time.Now

	// revoked on node A: refused by node B at the next request
	if err := c.a.Revoke(t.Context(), admSerial, "key-compromise"); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, c.a, srv, &adm, RoleAdmin); code != 403 || !strings.Contains(body, "revoked") {
		t.Errorf("revoked admin: %d %q", code, body)
	}
	// tokens are never minted for operators
	if _, err := c.a.NewToken("bob", RoleAdmin, 0); err == nil {
		t.Error("a one-time token for an admin was minted")
	}
}

// An external CA trusted for agents (ca_cert_path) cannot sign an
// operator in, even with the admin OU.
func TestAdminCertificateNotFromExternalCA(t *testing.T) {
	c := newCluster(t)
	ext := newCluster(t)
	extAdmin, _ := clientCert(t, ext.a, RoleAdmin, "alice")
	bundle := filepath.Join(t.TempDir(), "ext-ca.pem")
	if err := os.WriteFile(bundle, ext.a.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := NewClientVerifier(c.r.fsms[0], VerifierConfig{CABundles: []string{bundle}, AgentOUs: []string{DefaultAgentOU}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, c.a, v, whoami(v)).URL
	if code, body := call(t, c.a, srv, &extAdmin, RoleAdmin); code != 403 || !strings.Contains(body, "not issued by the cluster CA") {
		t.Errorf("external CA admin certificate: %d %q", code, body)
	}
	// a verifier on a node without the CA yet refuses every operator
	r := newReplicas(1)
	early, err := NewClientVerifier(r.fsms[0], VerifierConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	own, _ := clientCert(t, c.a, RoleAdmin, "bob")
	if _, err := early.Verify(&tls.ConnectionState{PeerCertificates: leafAndChain(t, own)}, RoleAdmin); err == nil {
		t.Error("admin accepted by a node without the cluster CA")
	}
}

func TestAdminOUConfig(t *testing.T) {
	v, err := NewClientVerifier(nil, VerifierConfig{AdminOUs: []string{"ops", "sre", "ops"}})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(v.adminOUs, ",") != "ops,sre" {
		t.Errorf("admin OUs %v", v.adminOUs)
	}
	if v, _ := NewClientVerifier(nil, VerifierConfig{}); strings.Join(v.adminOUs, ",") != DefaultAdminOU {
		t.Errorf("default admin OUs %v", v.adminOUs)
	}
	if _, err := NewClientVerifier(nil, VerifierConfig{AdminOUs: []string{""}}); err == nil {
		t.Error("empty admin OU accepted")
	}
	for _, cfg := range []VerifierConfig{
		{AdminOUs: []string{DefaultAgentOU}},
		{AdminOUs: []string{"x"}, BouncerOUs: []string{"x"}},
	} {
		if _, err := NewClientVerifier(nil, cfg); err == nil || !strings.Contains(err.Error(), "both an admin OU") {
			t.Errorf("overlapping OUs %+v: %v", cfg, err)
		}
	}
	if r, err := ParseRole(" Admin "); err != nil || r != RoleAdmin {
		t.Errorf("ParseRole(admin) = %q %v", r, err)
	}
}

func TestAdminP12(t *testing.T) {
	c := newCluster(t)
	certPEM, keyPEM, _, err := c.a.IssueClient(RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	m := &ClientMaterial{CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: c.a.RootPEM()}
	dir := t.TempDir()
	files, err := WriteClientFiles(dir, RoleAdmin, "alice", "", m)
	if err != nil || len(files) != 3 {
		t.Fatalf("WriteClientFiles(admin) = %v %v", files, err)
	}
	pw, err := NewP12Password()
	if err != nil || len(pw) != 32 {
		t.Fatalf("password %q %v", pw, err)
	}
	if pw2, _ := NewP12Password(); pw2 == pw {
		t.Fatal("two equal random passwords")
	}
	path, err := WriteAdminP12(dir, "alice", m, pw)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 || filepath.Base(path) != "alice.p12" {
		t.Fatalf("p12 file %s: %v %v", path, st, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, leaf, cas, err := pkcs12.DecodeChain(data, pw)
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChainPEM(t, certPEM)
	if !leaf.Equal(chain[0]) || leaf.Subject.CommonName != "alice" {
		t.Fatalf("p12 leaf %v", leaf.Subject)
	}
	if !key.(*ecdsa.PrivateKey).PublicKey.Equal(leaf.PublicKey) {
		t.Fatal("p12 key does not match its certificate")
	}
	if len(cas) != 2 || !cas[0].Equal(c.a.Intermediate()) || !cas[1].Equal(c.a.Root()) {
		t.Fatalf("p12 CA certificates: %d", len(cas))
	}
	if _, _, _, err := pkcs12.DecodeChain(data, pw+"x"); err == nil {
		t.Fatal("p12 opened with a wrong password")
	}
	if _, err := AdminP12(m, ""); err == nil {
		t.Fatal("p12 without a password")
	}

	// what a browser's import does: OpenSSL reads it with the password
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: the OpenSSL check is skipped")
		return
	}
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadP12Password(pwFile); err != nil || got != pw {
		t.Fatalf("ReadP12Password = %q %v", got, err)
	}
	out, err := exec.Command("openssl", "pkcs12", "-info", "-in", path, "-passin", "file:"+pwFile, "-nodes").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs12 -info: %v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "PBES2") || !strings.Contains(s, "AES-256-CBC") || !strings.Contains(s, "CN = alice") ||
		!strings.Contains(s, "PRIVATE KEY") || strings.Count(s, "BEGIN CERTIFICATE") != 3 {
		t.Fatalf("openssl pkcs12 -info:\n%s", s)
	}
	bad := filepath.Join(dir, "bad")
	_ = os.WriteFile(bad, []byte("wrong\n"), 0o600)
	if out, err := exec.Command("openssl", "pkcs12", "-info", "-in", path, "-passin", "file:"+bad, "-nokeys").CombinedOutput(); err == nil {
		t.Fatalf("openssl opened the p12 with a wrong password:\n%s", out)
	}
}

func TestReadP12Password(t *testing.T) {
	dir := t.TempDir()
	for content, want := range map[string]string{"s3cret\n": "s3cret", "s3cret\r\nignored\n": "s3cret", "no newline": "no newline"} {
		p := filepath.Join(dir, "pw")
		_ = os.WriteFile(p, []byte(content), 0o600)
		if got, err := ReadP12Password(p); err != nil || got != want {
			t.Errorf("%q: %q %v", content, got, err)
		}
	}
	for _, content := range []string{"", "\nsecond line", strings.Repeat("x", MaxP12Password+10)} {
		p := filepath.Join(dir, "pw")
		_ = os.WriteFile(p, []byte(content), 0o600)
		if _, err := ReadP12Password(p); err == nil {
			t.Errorf("%.20q accepted", content)
		}
	}
	if _, err := ReadP12Password(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}

func listRoles(ca *CA) map[string]Role {
	out := map[string]Role{}
	for _, ci := range ca.List() {
		out[ci.Name] = ci.Role
	}
	return out
}

func leafAndChain(t *testing.T, c tls.Certificate) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, der := range c.Certificate {
		crt, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, crt)
	}
	return out
}

func selfSigned(t *testing.T, cn, ou string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	crt, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return crt
}
