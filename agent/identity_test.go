package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return &testCA{cert: c, key: key, pool: pool}
}

// client issues a client certificate; the same key with a new serial is a
// renewal.
func (ca *testCA) client(t *testing.T, cn string, key *ecdsa.PrivateKey, serial int64) tls.Certificate {
	return ca.clientValid(t, cn, key, serial, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

func (ca *testCA) clientValid(t *testing.T, cn string, key *ecdsa.PrivateKey, serial int64, from, until time.Time) tls.Certificate {
	if key == nil {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: from, NotAfter: until,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// A local client that presents the agent's own certificate (or a renewal
// with the same key) is sent upstream with it; another certificate is
// refused; a client without one passes through without a certificate.
func TestIdentityCertificatePresentedUpstream(t *testing.T) {
	ca := newTestCA(t)
	idKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	identity := ca.client(t, "fw1", idKey, 10)
	renewed := ca.client(t, "fw1", idKey, 11)
	// the client's copy expired (the agent renewed the files, the client
	// has not restarted yet): same key, still its identity
	expired := ca.clientValid(t, "fw1", idKey, 9, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	stranger := ca.client(t, "fw2", nil, 12)

	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn := "none"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			cn = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		_, _ = io.WriteString(w, cn)
	}))
	upstream.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	upstream.StartTLS()
	t.Cleanup(upstream.Close)
	roots := x509.NewCertPool()
	roots.AddCert(upstream.Certificate())

	a, err := New(Config{Servers: []string{upstream.URL}, TLS: &tls.Config{RootCAs: roots}, Identity: &identity,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	local := httptest.NewUnstartedServer(a.Handler())
	local.TLS = &tls.Config{ClientAuth: tls.RequestClientCert} // as `halapi agent run --tls-listen`
	local.StartTLS()
	t.Cleanup(local.Close)
	waitUntil(t, "upstream healthy", func() bool { return a.Preferred() != "" })

	localRoots := x509.NewCertPool()
	localRoots.AddCert(local.Certificate())
	get := func(cert *tls.Certificate) (int, string) {
		tc := &tls.Config{RootCAs: localRoots}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
		resp, err := c.Get(local.URL + "/v1/decisions/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(&identity); code != 200 || body != "fw1" {
		t.Fatalf("identity client: %d %q, want the node to see fw1", code, body)
	}
	if code, body := get(&renewed); code != 200 || body != "fw1" {
		t.Fatalf("renewed identity: %d %q, want the node to see fw1", code, body)
	}
	if code, body := get(&expired); code != 200 || body != "fw1" {
		t.Fatalf("expired copy of the identity: %d %q, want the node to see fw1", code, body)
	}
	if code, body := get(&stranger); code != http.StatusForbidden || !strings.Contains(body, "not the one the agent holds") {
		t.Fatalf("stranger: %d %q, want 403", code, body)
	}
	if code, body := get(nil); code != 200 || body != "none" {
		t.Fatalf("no certificate: %d %q, want passthrough without one", code, body)
	}
	// every answer came from the first attempt (the relay, over TLS, with
	// and without the identity): nothing failed and was retried
	if st := a.Status(); st.Retries != 0 || st.Failovers != 0 || st.Nodes[0].Errors != 0 {
		t.Fatalf("%d retries, %d failovers, %d errors (%s): want none", st.Retries, st.Failovers, st.Nodes[0].Errors, st.Nodes[0].LastError)
	}
}

func TestSetupWritesAgentFiles(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	caPath := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := Setup(SetupParams{Dir: dir, CAPath: caPath, Servers: []string{"https://10.0.0.1:8080/"}, TLSListen: "0.0.0.0:8443"}); err == nil {
		t.Fatal("a TLS listener off loopback was accepted")
	}
	files, url, bundle, err := Setup(SetupParams{Dir: dir, CertPath: filepath.Join(dir, "fw.crt"), KeyPath: filepath.Join(dir, "fw.key"),
		CAPath: caPath, Servers: []string{"https://10.0.0.1:8080/"}})
	if err != nil {
		t.Fatal(err)
	}
	if url != "https://"+DefaultTLSListen+"/" || len(files) != 4 {
		t.Fatalf("url %s, files %v", url, files)
	}
	var cfg FileConfig
	b, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err := yaml.Unmarshal(b, &cfg); err != nil || cfg.TLSListen != DefaultTLSListen || cfg.Servers[0] != "https://10.0.0.1:8080/" || cfg.CertPath == "" {
		t.Fatalf("config %+v, err %v", cfg, err)
	}
	if fi, _ := os.Stat(cfg.TLSKeyPath); fi.Mode().Perm() != 0o600 {
		t.Fatalf("listener key mode %v", fi.Mode())
	}
	// The bundle lets a client verify the listener on 127.0.0.1.
	pair, err := tls.LoadX509KeyPair(cfg.TLSCertPath, cfg.TLSKeyPath)
	if err != nil {
		t.Fatal(err)
	}
	pemBundle, _ := os.ReadFile(bundle)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBundle) {
		t.Fatal("bundle has no certificates")
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
		t.Fatalf("listener certificate does not verify for 127.0.0.1: %v", err)
	}
	if leaf.IsCA {
		t.Fatal("the listener certificate is a CA")
	}
	if cfg.Socket != "" {
		t.Fatalf("a socket %q without asking for one", cfg.Socket)
	}

	// with a socket: written in the agent's config; a relative path refused
	if _, _, _, err := Setup(SetupParams{Dir: dir, CertPath: cfg.CertPath, KeyPath: cfg.KeyPath, CAPath: caPath,
		Servers: cfg.Servers, Socket: "agent.sock"}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Fatalf("relative socket path: %v", err)
	}
	if _, _, _, err := Setup(SetupParams{Dir: dir, CertPath: cfg.CertPath, KeyPath: cfg.KeyPath, CAPath: caPath,
		Servers: cfg.Servers, Socket: "/run/halapi-agent/agent.sock", SocketGroup: "crowdsec"}); err != nil {
		t.Fatal(err)
	}
	cfg = FileConfig{}
	b, _ = os.ReadFile(filepath.Join(dir, ConfigFile))
	if err := yaml.Unmarshal(b, &cfg); err != nil || cfg.Socket != "/run/halapi-agent/agent.sock" || cfg.SocketGroup != "crowdsec" || cfg.Listen != DefaultListen {
		t.Fatalf("config with a socket %+v, err %v", cfg, err)
	}
}

// The agent renews its identity at two thirds of its lifetime through the
// cluster's /renew (mTLS with the current certificate), rewrites the file
// and presents the renewal upstream.
func TestIdentityRenewedBeforeExpiry(t *testing.T) {
	ca := newTestCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// 2 h lifetime, 1 h 30 gone: due
	old := ca.clientValid(t, "fw1", key, 20, time.Now().Add(-90*time.Minute), time.Now().Add(30*time.Minute))
	var renewals atomic.Int64
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serial := "none"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			serial = r.TLS.PeerCertificates[0].SerialNumber.String()
		}
		if r.URL.Path == "/renew" {
			if serial != "20" {
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			renewals.Add(1)
			// backdated like step-CA's (1 min) on a short lifetime: not
			// due again before two thirds of what is left
			n := ca.clientValid(t, "fw1", key, 21, time.Now().Add(-time.Minute), time.Now().Add(20*time.Second))
			_ = json.NewEncoder(w).Encode(map[string]any{
				"crt":       string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: n.Certificate[0]})),
				"ca":        string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})),
				"certChain": []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: n.Certificate[0]}))},
			})
			return
		}
		_, _ = io.WriteString(w, serial)
	}))
	upstream.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	upstream.StartTLS()
	t.Cleanup(upstream.Close)
	roots := x509.NewCertPool()
	roots.AddCert(upstream.Certificate())

	dir := t.TempDir()
	files := &IdentityFiles{CertPath: filepath.Join(dir, "fw1.crt"), KeyPath: filepath.Join(dir, "fw1.key")}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(files.KeyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.CertPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: old.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	// written when it was issued, 90 min ago
	issued := time.Now().Add(-90 * time.Minute)
	if err := os.Chtimes(files.CertPath, issued, issued); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{Servers: []string{upstream.URL}, TLS: &tls.Config{RootCAs: roots}, IdentityFiles: files,
		IdentityEvery: 20 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	waitUntil(t, "the identity renewed", func() bool {
		st := a.Status()
		return st.Identity != nil && st.Identity.Serial == "21" && st.Identity.Renewals == 1
	})
	c, err := tls.LoadX509KeyPair(files.CertPath, files.KeyPath)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	if leaf.SerialNumber.Int64() != 21 {
		t.Fatalf("certificate file holds serial %v after the renewal", leaf.SerialNumber)
	}
	// the renewal is what upstream sees now
	local := httptest.NewUnstartedServer(a.Handler())
	local.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	local.StartTLS()
	t.Cleanup(local.Close)
	lroots := x509.NewCertPool()
	lroots.AddCert(local.Certificate())
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: lroots, Certificates: []tls.Certificate{old}}}}
	resp, err := client.Get(local.URL + "/v1/decisions")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "21" {
		t.Fatalf("upstream saw serial %q, want the renewal 21", b)
	}
	// several identity rounds later, still one renewal
	time.Sleep(200 * time.Millisecond) // ten rounds of IdentityEvery: nothing may happen
	if n := renewals.Load(); n != 1 {
		t.Fatalf("%d renewals, want 1 (the renewal is not due again)", n)
	}
}
