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
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Config e2e tests (issue 10, config part): `serve --crowdsec-config` on a
// CrowdSec config.yaml of the TLS tutorial (external CA, client
// certificates, CRL) serves as the same settings given as flags.
// Addresses: 127.0.0.141 (config file) and 127.0.0.146 (flags), i.e. the
// address bases 140 and 145.

// extCA is an external CA as the tutorial makes one with cfssl.
type extCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newExtCA(t *testing.T, dir string) *extCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tutorial CA", Organization: []string{"Crowdsec"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &extCA{cert: cert, key: key, dir: dir}
	ca.write(t, "ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *extCA) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(ca.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// issue writes NAME.pem and NAME-key.pem: a server certificate for ips, or
// a client certificate with OU ou.
func (ca *extCA) issue(t *testing.T, name, cn, ou string, serial int64, ips ...string) (certPath, keyPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, ip := range ips {
		tpl.IPAddresses = append(tpl.IPAddresses, net.ParseIP(ip))
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return ca.write(t, name+".pem", "CERTIFICATE", der), ca.write(t, name+"-key.pem", "EC PRIVATE KEY", kder)
}

func (ca *extCA) crl(t *testing.T, revoked ...int64) {
	t.Helper()
	tpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour)}
	for _, s := range revoked {
		tpl.RevokedCertificateEntries = append(tpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now().Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tpl, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	ca.write(t, "crl.pem", "X509 CRL", der)
}

// launchServe starts `halapi serve` with exactly args and env on s (data
// dir, log, stop on cleanup), without the harness's --listen/--plain-http.
func launchServe(t *testing.T, s *Server, env []string, args ...string) {
	t.Helper()
	s.launch(env, append([]string{"serve", "--data-dir", s.DataDir}, args...))
}

func TestConfigCrowdsecConfigServes(t *testing.T) {
	conf := t.TempDir()
	ssl := filepath.Join(conf, "ssl")
	if err := os.MkdirAll(ssl, 0o700); err != nil {
		t.Fatal(err)
	}
	ipA, ipB := "127.0.0.141", "127.0.0.146"
	ca := newExtCA(t, ssl)
	ca.issue(t, "lapi", "lapi", "lapi-ou", 10, ipA, ipB)
	bouncerCert, bouncerKey := ca.issue(t, "fw1", "fw1", "bouncer-ou", 11)
	otherCert, otherKey := ca.issue(t, "fw2", "fw2", "other-ou", 12)
	revCert, revKey := ca.issue(t, "fw3", "fw3", "bouncer-ou", 13)
	ca.crl(t, 13)

	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("config.yaml", read("../cmd/halapi/testdata/crowdsec/config.yaml"))
	write("console.yaml", read("../cmd/halapi/testdata/crowdsec/console.yaml"))
	write("profiles.yaml", "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n")
	// CAPI on a closed loopback port: the node must serve regardless
	write("online_api_credentials.yaml", "url: http://127.0.0.141:9/\nlogin: e2e-machine\npassword: e2e-password\n")

	portA, metricsA := freePortOn(t, ipA, false), freePortOn(t, ipA, false)
	portB, metricsB := freePortOn(t, ipB, false), freePortOn(t, ipB, false)
	// this host's overrides, merged over config.yaml as CrowdSec does
	write("config.yaml.local", fmt.Sprintf("api:\n  server:\n    listen_uri: %s:%d\nprometheus:\n  listen_addr: %s\n  listen_port: %d\n", ipA, portA, ipA, metricsA))
	token := "e2e-registration-token-0123456789abcdef"
	env := []string{"CS_CONF=" + conf, "REGISTRATION_TOKEN=" + token}

	a := NewServer(t)
	a.Addr, a.URL = net.JoinHostPort(ipA, strconv.Itoa(portA)), fmt.Sprintf("https://%s:%d/", ipA, portA)
	launchServe(t, a, env, "--crowdsec-config", filepath.Join(conf, "config.yaml"), "--node-id", "a")

	b := NewServer(t)
	b.Addr, b.URL = net.JoinHostPort(ipB, strconv.Itoa(portB)), fmt.Sprintf("https://%s:%d/", ipB, portB)
	launchServe(t, b, nil, "--node-id", "b",
		"--listen", b.Addr, "--plain-http=false",
		"--tls-cert", ssl+"/lapi.pem", "--tls-key", ssl+"/lapi-key.pem",
		"--client-ca", ssl+"/ca.pem", "--crl", ssl+"/crl.pem",
		"--agents-allowed-ou", "agent-ou", "--bouncers-allowed-ou", "bouncer-ou",
		"--trusted-ips", "127.0.0.1,::1,10.0.0.0/24", "--trusted-proxies", "10.0.0.2",
		"--auto-registration-token", token, "--auto-registration-ranges", "10.0.0.0/24",
		"--profiles", conf+"/profiles.yaml", "--capi-credentials", conf+"/online_api_credentials.yaml",
		"--console-share-manual-decisions=true", "--console-share-tainted=false",
		"--flush-max-items", "20000", "--flush-max-age", "14d", "--flush-metrics-max-age", "3d",
		"--flush-agents-autodelete-cert", "60m", "--flush-agents-autodelete-password", "30d",
		"--flush-bouncers-autodelete-cert", "60m", "--flush-bouncers-autodelete-api-key", "1d12h",
		"--metrics-listen", net.JoinHostPort(ipB, strconv.Itoa(metricsB)))

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	serverTLS := func() (*tls.Config, error) { return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil }
	a.TLS, b.TLS = serverTLS, serverTLS

	for _, tc := range []struct {
		name    string
		s       *Server
		metrics string
	}{{"crowdsec-config", a, net.JoinHostPort(ipA, strconv.Itoa(metricsA))}, {"flags", b, net.JoinHostPort(ipB, strconv.Itoa(metricsB))}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.waitHealthy() // HTTPS with the external CA's certificate
			files := bouncerTLSFiles{Cert: bouncerCert, Key: bouncerKey, CA: ssl + "/ca.pem"}
			if code, _, err := liveStatus(certLiveBouncer(t, files, tc.s.URL), "1.2.3.4"); code != http.StatusOK {
				t.Fatalf("bouncer with a bouncer-ou certificate of the external CA: %d %v", code, err)
			}
			for what, f := range map[string]bouncerTLSFiles{
				"OU not allowed": {Cert: otherCert, Key: otherKey, CA: ssl + "/ca.pem"},
				"revoked (CRL)":  {Cert: revCert, Key: revKey, CA: ssl + "/ca.pem"},
			} {
				if code, _, _ := liveStatus(certLiveBouncer(t, f, tc.s.URL), "1.2.3.4"); code == http.StatusOK {
					t.Errorf("bouncer certificate %s: accepted", what)
				}
			}
			code, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+tc.metrics+"/metrics")
			if err != nil || code != http.StatusOK || !strings.Contains(string(body), "go_goroutines") {
				t.Fatalf("metrics on %s: %d %v", tc.metrics, code, err)
			}
		})
	}

	log := read(a.logPath)
	for _, w := range []string{"WARNING: --crowdsec-config api.server.tls.cache_expiration: ignored",
		"WARNING: --crowdsec-config not LAPI settings, not used by serve"} {
		if !strings.Contains(log, w) {
			t.Errorf("node log lacks %q", w)
		}
	}
	if strings.Contains(log, token) || strings.Contains(log, "e2e-password") {
		t.Error("a secret of the CrowdSec config shows in the node log")
	}
}

// TestConfigPlainHTTPRemoteNeedsSecondFlag: CrowdSec's default config
// (plain http) on an address that is not loopback is refused with one
// line that names --allow-plain-http-remote, before anything is written.
func TestConfigPlainHTTPRemoteNeedsSecondFlag(t *testing.T) {
	conf := t.TempDir()
	p := filepath.Join(conf, "config.yaml")
	if err := os.WriteFile(p, []byte("api:\n  server:\n    listen_uri: 0.0.0.0:8080\ndb_config:\n  flush:\n    max_items: 5000\n    max_age: 7d\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(conf, "data")
	out, timedOut, err := runUntilExit(20*time.Second, "serve", "--crowdsec-config", p, "--data-dir", data)
	last := strings.TrimSpace(out)
	if i := strings.LastIndexByte(last, '\n'); i >= 0 {
		last = last[i+1:]
	}
	if timedOut || err == nil || !strings.HasPrefix(last, "Error: --crowdsec-config: api.server.listen_uri 0.0.0.0:8080 is plain http") ||
		!strings.Contains(last, "--allow-plain-http-remote") {
		t.Fatalf("exit %v (timed out %v), output:\n%s", err, timedOut, out)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("a refused start created the data dir")
	}
}
