package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// extCA is an external CA whose certificates name an OCSP responder the
// test runs on loopback.
type extCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newExtCA(t *testing.T, name string, parent *extCA, ocspURL string) *extCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	signer, parentCert := crypto.Signer(key), tmpl
	if parent != nil {
		signer, parentCert = parent.key, parent.cert
		if ocspURL != "" {
			tmpl.OCSPServer = []string{ocspURL}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &extCA{cert: c, key: key}
}

func (ca *extCA) leaf(t *testing.T, cn, ou string, serial int64, ocspURLs ...string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), OCSPServer: ocspURLs,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// responder is an OCSP responder: status per serial, signed by the issuer
// of the certificate asked about; it counts queries and can be "down".
type responder struct {
	mu      sync.Mutex
	issuers map[string]*extCA // by subject
	status  map[string]int    // serial -> ocsp.Good/Revoked/Unknown
	queries atomic.Int64
	down    atomic.Bool
	srv     *httptest.Server
}

func newResponder(t *testing.T) *responder {
	r := &responder{issuers: map[string]*extCA{}, status: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.queries.Add(1)
		if r.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		body, _ := io.ReadAll(req.Body)
		q, err := ocsp.ParseRequest(body)
		if err != nil || req.Header.Get("Content-Type") != "application/ocsp-request" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		st, ok := r.status[q.SerialNumber.String()]
		var issuer *extCA
		for _, ca := range r.issuers {
			h := q.HashAlgorithm.New()
			h.Write(ca.cert.RawSubject)
			if string(h.Sum(nil)) == string(q.IssuerNameHash) {
				issuer = ca
			}
		}
		r.mu.Unlock()
		if !ok || issuer == nil {
			st = ocsp.Unknown
		}
		if issuer == nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		tmpl := ocsp.Response{Status: st, SerialNumber: q.SerialNumber, ThisUpdate: time.Now().Add(-time.Minute),
			NextUpdate: time.Now().Add(time.Hour)}
		if st == ocsp.Revoked {
			tmpl.RevokedAt = time.Now().Add(-time.Minute)
		}
		der, err := ocsp.CreateResponse(issuer.cert, issuer.cert, tmpl, issuer.key)
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		_, _ = w.Write(der)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *responder) set(serial int64, st int) {
	r.mu.Lock()
	r.status[big.NewInt(serial).String()] = st
	r.mu.Unlock()
}

func (r *responder) trust(ca *extCA) {
	r.mu.Lock()
	r.issuers[ca.cert.Subject.CommonName] = ca
	r.mu.Unlock()
}

func connState(chain ...*x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{PeerCertificates: chain[:1], VerifiedChains: [][]*x509.Certificate{chain}}
}

func TestOCSPClientCertificates(t *testing.T) {
	r := newResponder(t)
	root := newExtCA(t, "ext-root", nil, "")
	r.trust(root)
	v, err := NewClientVerifier(nil, VerifierConfig{OCSP: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	v.now = func() time.Time { return clock }
	verify := func(c *x509.Certificate, chain ...*x509.Certificate) error {
		_, err := v.Verify(connState(append([]*x509.Certificate{c}, chain...)...), RoleBouncer)
		return err
	}

	good := root.leaf(t, "fw-good", DefaultBouncerOU, 101, r.srv.URL)
	revoked := root.leaf(t, "fw-revoked", DefaultBouncerOU, 102, r.srv.URL)
	r.set(101, ocsp.Good)
	r.set(102, ocsp.Revoked)
	if err := verify(good, root.cert); err != nil {
		t.Fatalf("good certificate refused: %v", err)
	}
	if err := verify(revoked, root.cert); err == nil || !strings.Contains(err.Error(), "revoked by OCSP") {
		t.Fatalf("revoked certificate: %v", err)
	}
	// answers are cached for the cache expiration: no new query
	n := r.queries.Load()
	r.set(101, ocsp.Revoked)
	if err := verify(good, root.cert); err != nil || r.queries.Load() != n {
		t.Fatalf("cached good answer: %v, %d queries (was %d)", err, r.queries.Load(), n)
	}
	clock = clock.Add(DefaultOCSPCache + time.Second)
	if err := verify(good, root.cert); err == nil || !strings.Contains(err.Error(), "revoked by OCSP") {
		t.Fatalf("revocation after cache expiry: %v", err)
	}

	// responder down: accepted (fail-open, as CrowdSec), not cached: once
	// it is back (after the retry pause) its answer counts
	later := root.leaf(t, "fw-later", DefaultBouncerOU, 103, r.srv.URL)
	r.set(103, ocsp.Revoked)
	r.down.Store(true)
	if err := verify(later, root.cert); err != nil {
		t.Fatalf("responder down: refused (%v), CrowdSec accepts", err)
	}
	r.down.Store(false)
	n = r.queries.Load()
	if err := verify(later, root.cert); err != nil || r.queries.Load() != n {
		t.Fatalf("within the retry pause: %v, %d new queries", err, r.queries.Load()-n)
	}
	clock = clock.Add(OCSPRetry + time.Second)
	if err := verify(later, root.cert); err == nil {
		t.Fatal("responder back: revoked certificate accepted")
	}
	// "unknown" is no answer either: accepted
	unknown := root.leaf(t, "fw-unknown", DefaultBouncerOU, 104, r.srv.URL)
	if err := verify(unknown, root.cert); err != nil {
		t.Fatalf("unknown status: %v", err)
	}
	// the next server is tried after a failing one
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }))
	dead.Close()
	second := root.leaf(t, "fw-second", DefaultBouncerOU, 105, dead.URL, r.srv.URL)
	r.set(105, ocsp.Revoked)
	if err := verify(second, root.cert); err == nil || !strings.Contains(err.Error(), "revoked by OCSP") {
		t.Fatalf("second responder: %v", err)
	}
	// no OCSP server in the certificate: not checked
	n = r.queries.Load()
	if err := verify(root.leaf(t, "fw-none", DefaultBouncerOU, 106), root.cert); err != nil || r.queries.Load() != n {
		t.Fatalf("no OCSP server: %v, %d queries", err, r.queries.Load()-n)
	}

	// an intermediate is checked too (every certificate but the root)
	inter := newExtCA(t, "ext-inter", root, r.srv.URL)
	r.trust(inter)
	leaf := inter.leaf(t, "fw-via-inter", DefaultBouncerOU, 201, r.srv.URL)
	r.set(201, ocsp.Good)
	r.set(inter.cert.SerialNumber.Int64(), ocsp.Good)
	if err := verify(leaf, inter.cert, root.cert); err != nil {
		t.Fatalf("good chain: %v", err)
	}
	r.set(inter.cert.SerialNumber.Int64(), ocsp.Revoked)
	clock = clock.Add(DefaultOCSPCache + time.Second)
	if err := verify(leaf, inter.cert, root.cert); err == nil || !strings.Contains(err.Error(), "revoked by OCSP") {
		t.Fatalf("revoked intermediate: %v", err)
	}

	// disabled: no query at all
	off, _ := NewClientVerifier(nil, VerifierConfig{Logger: quietLogger()})
	n = r.queries.Load()
	if _, err := off.Verify(connState(revoked, root.cert), RoleBouncer); err != nil || r.queries.Load() != n {
		t.Fatalf("OCSP off: %v, %d queries", err, r.queries.Load()-n)
	}
}

// Concurrent requests with the same certificate make one query.
func TestOCSPOneQueryPerCertificate(t *testing.T) {
	r := newResponder(t)
	root := newExtCA(t, "ext-root-2", nil, "")
	r.trust(root)
	gate := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		<-gate
		r.srv.Config.Handler.ServeHTTP(w, req)
	}))
	defer slow.Close()
	v, err := NewClientVerifier(nil, VerifierConfig{OCSP: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	leaf := root.leaf(t, "fw-many", DefaultBouncerOU, 301, slow.URL)
	r.set(301, ocsp.Revoked)
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := v.Verify(connState(leaf, root.cert), RoleBouncer)
			errs <- err
		}()
	}
	// let the goroutines pile up on the one query, then answer it
	deadline := time.Now().Add(5 * time.Second)
	for {
		v.ocsp.mu.Lock()
		busy := len(v.ocsp.inflight)
		v.ocsp.mu.Unlock()
		if busy == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	for range n {
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "revoked by OCSP") {
			t.Fatalf("concurrent verify: %v", err)
		}
	}
	if q := r.queries.Load(); q != 1 {
		t.Fatalf("%d OCSP queries for one certificate, want 1", q)
	}
}
