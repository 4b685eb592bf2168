package pki

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/halapi/halapi/admin"
)

func TestAdvertisedAPIURL(t *testing.T) {
	for _, c := range []struct {
		scheme, listen string
		names          []string
		want           string
	}{
		{"https", "127.0.0.1:8080", nil, "https://127.0.0.1:8080/"},
		{"http", "127.0.0.5:9000", []string{"lapi.example"}, "http://127.0.0.5:9000/"},
		{"https", "0.0.0.0:8080", nil, "https://127.0.0.1:8080/"},
		{"https", ":8080", []string{"lapi.example", "10.0.0.1"}, "https://lapi.example:8080/"},
		{"https", "[::]:8080", []string{"*.example", "fd00::1"}, "https://[fd00::1]:8080/"},
		{"https", "[::1]:8443", nil, "https://[::1]:8443/"},
	} {
		if got := AdvertisedAPIURL(c.scheme, c.listen, c.names); got != c.want {
			t.Errorf("AdvertisedAPIURL(%s, %s, %v) = %s, want %s", c.scheme, c.listen, c.names, got, c.want)
		}
	}
}

// adminCall serves one request on the admin API made of rt's routes.
func adminCall(t *testing.T, rt *Runtime, method, path string, out any) int {
	t.Helper()
	w := httptest.NewRecorder()
	admin.Handler(nil, rt.AdminRoutes).ServeHTTP(w, httptest.NewRequest(method, path, nil))
	if out != nil {
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, path, w.Code, w.Body, err)
		}
	}
	return w.Code
}

// The PKI's admin routes: 503 until the CA is loaded, then tokens,
// certificates, listing and revocation by name; bad input is a 400 with
// a message.
func TestRuntimeAdminRoutes(t *testing.T) {
	rt := &Runtime{cfg: RuntimeConfig{NodeID: "n1"}, log: quietLogger(), ready: make(chan struct{})}
	var msg struct{ Message string }
	if code := adminCall(t, rt, "POST", "/admin/v1/pki/token?role=agent&name=a1", &msg); code != http.StatusServiceUnavailable ||
		!strings.Contains(msg.Message, "not ready") {
		t.Fatalf("before the CA: %d %q", code, msg.Message)
	}
	rt.ca = newCluster(t).a

	var tok map[string]string
	if code := adminCall(t, rt, "POST", "/admin/v1/pki/token?role=agent&name=a1&ttl=10m", &tok); code != 200 ||
		tok["token"] == "" || tok["fingerprint"] != rt.ca.Fingerprint() {
		t.Fatalf("token: %d %v", code, tok)
	}
	if code := adminCall(t, rt, "POST", "/admin/v1/pki/token?role=agent&name=a1&ttl=-1s", &msg); code != 400 ||
		msg.Message != `invalid --ttl "-1s"` {
		t.Fatalf("bad ttl: %d %q", code, msg.Message)
	}
	if code := adminCall(t, rt, "POST", "/admin/v1/pki/issue?role=king&name=a1", &msg); code != 400 || msg.Message == "" {
		t.Fatalf("bad role: %d %q", code, msg.Message)
	}
	var issued map[string]string
	if code := adminCall(t, rt, "POST", "/admin/v1/pki/issue?role=bouncer&name=fw", &issued); code != 200 ||
		!strings.Contains(issued["cert"], "BEGIN CERTIFICATE") || issued["serial"] == "" {
		t.Fatalf("issue: %d %v", code, issued)
	}
	var revoked struct{ Revoked []string }
	if code := adminCall(t, rt, "POST", "/admin/v1/pki/revoke?name=fw", &revoked); code != 200 ||
		len(revoked.Revoked) != 1 || revoked.Revoked[0] != issued["serial"] {
		t.Fatalf("revoke: %d %v", code, revoked)
	}
	var certs []CertInfo
	adminCall(t, rt, "GET", "/admin/v1/pki/certs", &certs)
	found := false
	for _, c := range certs {
		found = found || (c.Serial == issued["serial"] && c.Revoked)
	}
	if !found {
		t.Fatalf("revoked certificate not listed: %+v", certs)
	}
}

// api-info: the scheme, the advertised URL and, with the built-in CA, the
// CA bundle clients need; an external certificate names no CA.
func TestRuntimeAPIInfo(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pki", CAFile), []byte("PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  RuntimeConfig
		want APIInfo
	}{
		{RuntimeConfig{Listen: "0.0.0.0:8080", APINames: []string{"lapi.example"}},
			APIInfo{URL: "https://lapi.example:8080/", Scheme: "https", BuiltinCA: true, CAFile: filepath.Join(dir, "pki", CAFile), CAPEM: "PEM"}},
		{RuntimeConfig{Listen: "127.0.0.1:8080", ExternalCert: true}, APIInfo{URL: "https://127.0.0.1:8080/", Scheme: "https"}},
		{RuntimeConfig{Listen: "127.0.0.1:8080", PlainHTTP: true}, APIInfo{URL: "http://127.0.0.1:8080/", Scheme: "http"}},
	} {
		rt := &Runtime{cfg: c.cfg, dir: filepath.Join(dir, "pki")}
		var got APIInfo
		if code := adminCall(t, rt, "GET", "/admin/v1/api-info", &got); code != 200 || got != c.want {
			t.Errorf("%+v: %d %+v, want %+v", c.cfg, code, got, c.want)
		}
	}
}
