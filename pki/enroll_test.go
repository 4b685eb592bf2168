package pki

import (
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
	"gopkg.in/yaml.v3"
)

func TestEnrollAndClientFiles(t *testing.T) {
	c := newCluster(t)
	v, err := NewClientVerifier(c.r.fsms[0], VerifierConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, c.a, v, whoami(v))
	tok, err := c.b.NewToken("fw-7", RoleBouncer, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	info, err := InspectToken(tok)
	if err != nil || info.Subject != "fw-7" || info.Role != RoleBouncer || info.Fingerprint != c.a.Fingerprint() {
		t.Fatalf("InspectToken: %+v %v", info, err)
	}
	m, err := Enroll(t.Context(), srv.URL, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Enroll(t.Context(), srv.URL, tok); err == nil {
		t.Fatal("a token enrolled twice")
	}
	dir := t.TempDir()
	files, err := WriteClientFiles(dir, RoleBouncer, "fw-7", "https://lapi.example:8080/", m)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 {
		t.Errorf("files %v", files)
	}
	var cfg map[string]string
	b, _ := os.ReadFile(filepath.Join(dir, BouncerConfigFile))
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["api_url"] != "https://lapi.example:8080/" || cfg["cert_path"] != filepath.Join(dir, "fw-7.crt") ||
		cfg["key_path"] != filepath.Join(dir, "fw-7.key") || cfg["ca_cert_path"] != filepath.Join(dir, ClientCAFile) || len(cfg) != 4 {
		t.Errorf("bouncer config %v", cfg)
	}
	if st, _ := os.Stat(cfg["key_path"]); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode())
	}
	// the written files work against the LAPI verifier
	cert, err := tls.LoadX509KeyPair(cfg["cert_path"], cfg["key_path"])
	if err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, c.a, srv.URL, &cert, RoleBouncer); code != 200 || body != "fw-7" {
		t.Errorf("enrolled bouncer: %d %q", code, body)
	}

	// agent: local_api_credentials.yaml with no login/password
	certPEM, keyPEM, _, err := c.a.IssueClient(RoleAgent, "agent-7")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteClientFiles(dir, RoleAgent, "agent-7", "https://lapi.example:8080/",
		&ClientMaterial{CertPEM: certPEM, KeyPEM: keyPEM, CAPEM: c.a.RootPEM()}); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, AgentConfigFile))
	cfg = nil
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"ca_cert_path", "cert_path", "key_path", "url"}) {
		t.Errorf("agent credentials keys %v", keys)
	}
}

// Only tokens carrying halapi's role claim produce certificates, even if
// signed with the provisioner key.
func TestTokenWithoutRoleIsRefused(t *testing.T) {
	c := newCluster(t)
	now := time.Now()
	claims := tokenClaims{
		Claims: jose.Claims{ID: "x1", Issuer: c.a.opts.Name, Subject: "agent1", Audience: c.a.audiences(),
			IssuedAt: jose.NewNumericDate(now), NotBefore: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(now.Add(time.Minute))},
		SANs: []string{"agent1"}, SHA: c.a.fp,
	}
	so := new(jose.SignerOptions).WithType("JWT").WithHeader("kid", c.a.jwk.KeyID)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: c.a.jwk.Key}, so)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jose.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	rec := postSign(t, c.a.Handler(), tok, "agent1")
	if rec.Code == http.StatusCreated || !strings.Contains(rec.Body.String(), "carries no role") {
		t.Fatalf("a token without a role: %d %s", rec.Code, rec.Body)
	}
	// the same claims with the role work (the refusal is the template's)
	claims.ID, claims.Halapi = "x2", &roleClaim{Role: "agent", OU: DefaultAgentOU}
	tok, _ = jose.Signed(signer).Claims(claims).CompactSerialize()
	if rec := postSign(t, c.a.Handler(), tok, "agent1"); rec.Code != http.StatusCreated {
		t.Fatalf("control: %d %s", rec.Code, rec.Body)
	}
}
