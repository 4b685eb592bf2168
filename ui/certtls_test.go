package ui

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/pki"
)

// TestCertificateSignInOverTLS signs in with a real client certificate of
// the cluster CA over a real TLS handshake on loopback: the console sees
// the verified chain the listener built.
func TestCertificateSignInOverTLS(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	e := newEnv(t, func(c *Config) {
		c.CertIdentity = func(cs *tls.ConnectionState) (string, error) {
			if len(cs.VerifiedChains) == 0 {
				return "", errors.New("no verified chain")
			}
			cn := cs.VerifiedChains[0][0].Subject.CommonName
			mu.Lock()
			seen = append(seen, cn)
			mu.Unlock()
			return cn, nil
		}
	})
	crtPEM, keyPEM, _, err := e.ca.IssueClient(pki.RoleBouncer, "carol")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(crtPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.RootPEM())
	srv := httptest.NewUnstartedServer(e.h)
	srv.TLS = &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	defer srv.Close()

	client := func(withCert bool) *http.Client {
		cl := srv.Client()
		tr := cl.Transport.(*http.Transport).Clone()
		if withCert {
			tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
		}
		jar, _ := cookiejar.New(nil)
		return &http.Client{Transport: tr, Jar: jar, Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	get := func(cl *http.Client, path string) (int, string) {
		resp, err := cl.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if _, body := get(client(false), "/ui/login"); strings.Contains(body, "cert-signin") {
		t.Fatal("certificate button without a certificate")
	}
	cl := client(true)
	_, body := get(cl, "/ui/login")
	m := csrfRe.FindStringSubmatch(body)
	if !strings.Contains(body, `id="cert-signin"`) || m == nil {
		t.Fatalf("no certificate sign-in:\n%s", body)
	}
	resp, err := cl.PostForm(srv.URL+"/ui/login/cert", url.Values{"csrf": {m[1]}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == CookieName && (!c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode) {
			t.Fatalf("cookie %+v", c)
		}
	}
	if code, body := get(cl, "/ui/"); code != 200 || !strings.Contains(body, "cert:carol") {
		t.Fatalf("after sign-in: %d", code)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[0] != "carol" {
		t.Fatalf("CertIdentity saw %v", seen)
	}
}
