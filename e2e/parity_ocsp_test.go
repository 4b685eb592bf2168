package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// ocspCA is an external CA with an OCSP responder on loopback.
type ocspCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	srv  *httptest.Server
	down atomic.Bool
	asks atomic.Int64

	mu     sync.Mutex
	status map[string]int
}

func newOCSPCA(t *testing.T) *ocspCA {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "external-root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca := &ocspCA{key: key, status: map[string]int{}}
	ca.cert, _ = x509.ParseCertificate(der)
	ca.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ca.asks.Add(1)
		if ca.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(r.Body)
		q, err := ocsp.ParseRequest(body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ca.mu.Lock()
		st, ok := ca.status[q.SerialNumber.String()]
		ca.mu.Unlock()
		if !ok {
			st = ocsp.Unknown
		}
		resp := ocsp.Response{Status: st, SerialNumber: q.SerialNumber, ThisUpdate: time.Now().Add(-time.Minute),
			NextUpdate: time.Now().Add(time.Hour)}
		if st == ocsp.Revoked {
			resp.RevokedAt = time.Now().Add(-time.Minute)
		}
		out, err := ocsp.CreateResponse(ca.cert, ca.cert, resp, ca.key)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		_, _ = w.Write(out)
	}))
	t.Cleanup(ca.srv.Close)

	return ca
}

// bouncerCert writes a bouncer certificate (OU bouncer-ou) that names the
// responder, with the given OCSP status, and returns cert and key paths.
func (ca *ocspCA) bouncerCert(t *testing.T, dir, cn string, serial int64, status int) (string, string) {
	t.Helper()

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial),
		Subject:   pkix.Name{CommonName: cn, OrganizationalUnit: []string{"bouncer-ou"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), OCSPServer: []string{ca.srv.URL},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	crt, kp := filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	ca.mu.Lock()
	ca.status[big.NewInt(serial).String()] = status
	ca.mu.Unlock()

	return crt, kp
}

// A node trusting an external CA (--client-ca) asks the OCSP responder the
// bouncer certificates name, as CrowdSec does: good → served, revoked →
// 403; with the responder down an unchecked certificate is served
// (CrowdSec's fail-open).
func TestParityOCSPExternalCA(t *testing.T) {
	ca := newOCSPCA(t)
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "external-root.crt")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	sc := newSecureCluster(t, "--client-ca", rootFile)
	n1 := sc.Found()

	status := func(cn string, serial int64, st int) int {
		t.Helper()
		crt, key := ca.bouncerCert(t, dir, cn, serial, st)
		lb := certLiveBouncer(t, bouncerTLSFiles{URL: n1.URL, Cert: crt, Key: key, CA: sc.CAFile}, "")
		code, _, _ := liveStatus(lb, "1.2.3.4")
		return code
	}
	if code := status("fw-good", 11, ocsp.Good); code != http.StatusOK {
		t.Fatalf("good certificate: HTTP %d, want 200", code)
	}
	asked := ca.asks.Load()
	if asked == 0 {
		t.Fatal("the responder was not asked")
	}
	if code := status("fw-revoked", 12, ocsp.Revoked); code != http.StatusForbidden {
		t.Fatalf("revoked certificate: HTTP %d, want 403", code)
	}
	ca.down.Store(true)
	if code := status("fw-unchecked", 13, ocsp.Revoked); code != http.StatusOK {
		t.Fatalf("responder down: HTTP %d, want 200 (CrowdSec accepts when OCSP cannot answer)", code)
	}
	if ca.asks.Load() <= asked+1 {
		t.Fatalf("the responder was not asked while down (%d queries)", ca.asks.Load())
	}
}
