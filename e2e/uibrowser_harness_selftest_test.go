package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"html"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUIBrowserHarness proves the browser harness on a trivial HTTPS page
// served by the test itself (no halapi): the browser trusts the test CA
// through its NSS database and only through it (a browser without it
// refuses the page), runs the page's script under a strict CSP, submits a
// form and follows the 303, reports a CSP violation among the console
// errors, presents a client certificate from a PKCS#12 without a dialog,
// and leaves screenshots in the artefact directory.
func TestUIBrowserHarness(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "harness test CA")
	caFile := filepath.Join(dir, "ca.crt")
	writePEM(t, caFile, "CERTIFICATE", ca.cert.Raw)

	srv := httptest.NewUnstartedServer(harnessPage())
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.leaf(t, "127.0.0.1", false)},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.pool(),
		MinVersion:   tls.VersionTLS12,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	origin := srv.URL // https://127.0.0.1:PORT

	t.Run("untrusted", func(t *testing.T) {
		b := StartBrowser(t)
		_, err := b.TryOpen(origin + "/")
		if err == nil || !strings.Contains(err.Error(), "ERR_CERT_AUTHORITY_INVALID") {
			t.Fatalf("a browser without the test CA opened the page: err=%v", err)
		}
	})

	t.Run("trusted", func(t *testing.T) {
		b := StartBrowser(t, TrustCA(caFile))
		if st := b.Open(origin + "/"); st != http.StatusOK {
			t.Fatalf("GET /: %d", st)
		}
		if got := b.Text("#who"); got != "anonymous" {
			t.Fatalf("#who = %q, want anonymous (no client certificate configured)", got)
		}
		b.WaitJS(5*time.Second, "the page's script ran", `document.querySelector("#js").textContent === "script ran"`, `document.querySelector("#js").textContent`)
		b.Shot("page")

		b.Type(`form#f input[name=value]`, "203.0.113.7")
		if st := b.ClickAndLoad(`form#f button[type=submit]`); st != http.StatusOK {
			t.Fatalf("form submission landed on %d", st)
		}
		if got := b.Text("#flash"); got != "added 203.0.113.7" {
			t.Fatalf("#flash = %q after the POST and its 303", got)
		}
		if loc := b.Location(); !strings.HasSuffix(loc, "/done?v=203.0.113.7") {
			t.Fatalf("location after the 303: %s", loc)
		}
		p := b.Shot("after-post")
		if fi, err := os.Stat(p); err != nil || fi.Size() < 1000 {
			t.Fatalf("screenshot %s: %v", p, err)
		}
		if errs := b.ConsoleErrors(); len(errs) > 0 {
			t.Fatalf("console errors (CSP?):\n%s", strings.Join(errs, "\n"))
		}
	})

	t.Run("csp-violation-reported", func(t *testing.T) {
		b := StartBrowser(t, TrustCA(caFile))
		b.Open(origin + "/inline")
		b.WaitJS(5*time.Second, "page loaded", `document.readyState === "complete"`, `document.readyState`)
		if got := b.Text("#js"); got != "no script" {
			t.Fatalf("the inline script ran despite the CSP: #js = %q", got)
		}
		waitFor(t, 5*time.Second, "the CSP violation among the console errors", func() (bool, string) {
			errs := b.ConsoleErrors()
			for _, e := range errs {
				if strings.Contains(e, "Content Security Policy") {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%q", errs)
		})
	})

	t.Run("client-certificate", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl (to write the PKCS#12) not found")
		}
		p12 := ca.clientP12(t, dir, "alice", "s3cret")
		b := StartBrowser(t, TrustCA(caFile), WithClientCert(p12, "s3cret", "alice", origin))
		b.Open(origin + "/")
		if got := b.Text("#who"); got != "alice" {
			t.Fatalf("#who = %q, want alice (the auto-selected client certificate)", got)
		}
		b.Shot("client-cert")
	})
}

// harnessPage is a tiny site: "/" shows the client certificate's CN and a
// form; the form POSTs to /add, which answers 303 to /done with a flash.
func harnessPage() http.Handler {
	mux := http.NewServeMux()
	page := func(w http.ResponseWriter, r *http.Request, flash string) {
		who := "anonymous"
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			who = r.TLS.PeerCertificates[0].Subject.CommonName
		}
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><html><head><title>harness</title><script src="/app.js" defer></script></head>
<body><h1>Browser harness</h1><p id="who">%s</p><p id="js">no script</p>`, html.EscapeString(who))
		if flash != "" {
			fmt.Fprintf(w, `<p id="flash">%s</p>`, html.EscapeString(flash))
		}
		fmt.Fprint(w, `<form id="f" method="post" action="/add"><input name="value"><button type="submit">Add</button></form></body></html>`)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { page(w, r, "") })
	mux.HandleFunc("GET /done", func(w http.ResponseWriter, r *http.Request) { page(w, r, "added "+r.URL.Query().Get("v")) })
	mux.HandleFunc("POST /add", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/done?v="+r.FormValue("value"), http.StatusSeeOther)
	})
	mux.HandleFunc("GET /inline", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!doctype html><html><head><title>inline</title></head><body><p id="js">no script</p>`+
			`<script>document.getElementById("js").textContent = "inline script ran";</script></body></html>`)
	})
	mux.HandleFunc("GET /app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		fmt.Fprint(w, `document.getElementById("js").textContent = "script ran";`)
	})
	return mux
}

// testCA is a throwaway certificate authority for the harness self-test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, key: key}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// leaf issues a server (IP SAN) or client certificate.
func (ca *testCA) leaf(t testing.TB, name string, client bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tmpl.IPAddresses = []net.IP{net.ParseIP(name)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// clientP12 writes a client certificate for cn as a PKCS#12 (openssl).
func (ca *testCA) clientP12(t testing.TB, dir, cn, password string) string {
	t.Helper()
	c := ca.leaf(t, cn, true)
	certFile, keyFile := filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writePEM(t, certFile, "CERTIFICATE", c.Certificate[0])
	kder, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	p12 := filepath.Join(dir, cn+".p12")
	runTool(t, "openssl", "pkcs12", "-export", "-in", certFile, "-inkey", keyFile, "-out", p12, "-passout", "pass:"+password)
	return p12
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
