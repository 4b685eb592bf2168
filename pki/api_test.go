package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/smallstep/certificates/api"
	"go.step.sm/crypto/x509util"
)

// signWithToken posts a CSR for cn with tok to POST /sign on h and checks
// the status; on success it returns the response.
func signWithToken(t *testing.T, h http.Handler, tok, cn string, want int) *api.SignResponse {
	t.Helper()
	rec := postSign(t, h, tok, cn)
	if rec.Code != want {
		t.Fatalf("POST /sign: %d %s, want %d", rec.Code, rec.Body.String(), want)
	}
	if want != http.StatusCreated {
		return nil
	}
	var resp api.SignResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatal(err)
	}
	return &resp
}

func postSign(t *testing.T, h http.Handler, tok, cn string) *httptest.ResponseRecorder {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509util.CreateCertificateRequest(cn, []string{cn}, key)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(api.SignRequest{CsrPEM: api.NewCertificateRequest(csr), OTT: tok})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/sign", bytes.NewReader(body)))
	return rec
}

func TestStepAPIRootsAndSign(t *testing.T) {
	c := newCluster(t)
	h := c.b.Handler()

	// GET /roots and /1.0/roots
	for _, path := range []string{"/roots", "/1.0/roots"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != 200 && rec.Code != 201 { // step answers /roots with 201
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		var roots api.RootsResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &roots); err != nil {
			t.Fatal(err)
		}
		if len(roots.Certificates) != 1 || !roots.Certificates[0].Equal(c.a.Root()) {
			t.Fatalf("GET %s: wrong roots", path)
		}
	}
	// GET /root/{sha}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/root/"+c.a.Fingerprint(), nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "BEGIN CERTIFICATE") {
		t.Fatalf("GET /root/sha: %d %s", rec.Code, rec.Body)
	}
	// GET /provisioners: the public key only
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/provisioners", nil))
	if rec.Code != 200 || strings.Contains(rec.Body.String(), `"d"`) || strings.Contains(rec.Body.String(), "encryptedKey") {
		t.Fatalf("GET /provisioners: %d %s", rec.Code, rec.Body)
	}

	// POST /sign with a halapi token minted on node A, served by node B
	for _, tc := range []struct {
		role Role
		ou   string
	}{{RoleAgent, DefaultAgentOU}, {RoleBouncer, DefaultBouncerOU}} {
		tok, err := c.a.NewToken("client-"+string(tc.role), tc.role, 0)
		if err != nil {
			t.Fatal(err)
		}
		resp := signWithToken(t, h, tok, "client-"+string(tc.role), http.StatusCreated)
		leaf := resp.ServerPEM.Certificate
		if leaf.Subject.CommonName != "client-"+string(tc.role) || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{tc.ou}) {
			t.Errorf("%s: subject %v", tc.role, leaf.Subject)
		}
		if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Errorf("%s: EKU %v", tc.role, leaf.ExtKeyUsage)
		}
		if len(resp.CertChainPEM) != 2 || !resp.CaPEM.Equal(c.a.Intermediate()) {
			t.Errorf("chain of %d", len(resp.CertChainPEM))
		}
		verifyTo(t, c.a, []*x509.Certificate{leaf, resp.CaPEM.Certificate}, x509.ExtKeyUsageClientAuth)
		// recorded in the FSM
		if _, err := c.a.db.GetCertificate(leaf.SerialNumber.String()); err != nil {
			t.Errorf("signed certificate not recorded: %v", err)
		}
	}

	// a CSR whose CN is not the token's subject is refused
	tok, _ := c.a.NewToken("agent-x", RoleAgent, 0)
	signWithToken(t, h, tok, "someone-else", http.StatusForbidden)
}

func TestOneTimeTokenAcrossNodes(t *testing.T) {
	c := newCluster(t)
	tok, err := c.a.NewToken("agent1", RoleAgent, 0)
	if err != nil {
		t.Fatal(err)
	}
	signWithToken(t, c.a.Handler(), tok, "agent1", http.StatusCreated)
	signWithToken(t, c.a.Handler(), tok, "agent1", http.StatusUnauthorized)
	signWithToken(t, c.b.Handler(), tok, "agent1", http.StatusUnauthorized)

	// first use on B, then A refuses
	tok2, _ := c.a.NewToken("agent2", RoleAgent, 0)
	signWithToken(t, c.b.Handler(), tok2, "agent2", http.StatusCreated)
	signWithToken(t, c.a.Handler(), tok2, "agent2", http.StatusUnauthorized)

	// tokens are for agents and bouncers only
	if _, err := c.a.NewToken("n", RoleNode, 0); err == nil {
		t.Error("NewToken minted a node token")
	}
}

// Renew and revoke through the step API over mTLS, as `step ca renew` and
// `step ca revoke --cert` do.
func TestStepAPIRenewAndRevokeMTLS(t *testing.T) {
	c := newCluster(t)
	v, err := NewClientVerifier(c.b.store, VerifierConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, c.b, v, nil)
	certPEM, keyPEM, serial, err := c.a.IssueClient(RoleBouncer, "fw1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cl := tlsClient(c.a, &cert)
	resp, err := cl.Post(srv.URL+"/renew", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("renew: %d %s", resp.StatusCode, body)
	}
	var sr api.SignResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		t.Fatal(err)
	}
	renewed := sr.ServerPEM.Certificate
	if renewed.SerialNumber.String() == serial || renewed.Subject.CommonName != "fw1" ||
		!slices.Equal(renewed.Subject.OrganizationalUnit, []string{DefaultBouncerOU}) {
		t.Errorf("renewed certificate: serial %s subject %v", renewed.SerialNumber, renewed.Subject)
	}
	if _, err := c.a.db.GetCertificate(renewed.SerialNumber.String()); err != nil {
		t.Error("renewed certificate not recorded")
	}

	// revoke the original over mTLS (passive revocation of one's own cert)
	rb, _ := json.Marshal(api.RevokeRequest{Serial: serial, Passive: true, Reason: "test"})
	cl = tlsClient(c.a, &cert)
	resp, err = cl.Post(srv.URL+"/revoke", "application/json", bytes.NewReader(rb))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("revoke: %d %s", resp.StatusCode, body)
	}
	if !c.a.IsRevoked(serial) {
		t.Fatal("revoked through the API but not in the FSM")
	}
	// a revoked certificate cannot renew (nor even connect: the LAPI
	// verifier does not run at the TLS layer, the authority checks it)
	cl = tlsClient(c.a, &cert)
	resp, err = cl.Post(srv.URL+"/renew", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("renew of a revoked certificate: %d", resp.StatusCode)
	}

	// GET /crl (DER) and /1.0/crl?pem list it
	for _, path := range []string{"/crl", "/1.0/crl?pem"} {
		resp, err := tlsClient(c.a, nil).Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.HasSuffix(path, "?pem") {
			blk, _ := pem.Decode(b)
			if blk == nil || blk.Type != "X509 CRL" {
				t.Fatalf("GET %s: not a PEM CRL", path)
			}
			b = blk.Bytes
		}
		rl, err := x509.ParseRevocationList(b)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		if len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.String() != serial {
			t.Errorf("GET %s: %d entries", path, len(rl.RevokedCertificateEntries))
		}
	}
	_ = context.Background()
}
