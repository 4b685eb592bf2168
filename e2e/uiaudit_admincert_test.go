package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// `halapi cert issue admin` on a secure node: the certificate (OU
// admin-ou), its key, the CA and a PKCS#12 that OpenSSL opens with the
// password (from a file, or generated and printed once, never logged).
// The node refuses the operator certificate on the agent and bouncer
// routes, and the issue is in the audit trail.
func TestUIAuditAdminCertificate(t *testing.T) {
	sc := newSecureCluster(t)
	n1 := sc.Found()
	base := t.TempDir()

	// a password from a file: not printed
	pwFile := filepath.Join(base, "pw")
	if err := os.WriteFile(pwFile, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "alice")
	var out string
	waitFor(t, pkiReadyTimeout, "cert issue admin on n1", func() (bool, string) {
		var err error
		out, err = n1.CLI("cert", "issue", "admin", "alice", "--out", dir, "--p12-password-file", pwFile)
		return err == nil, strings.TrimSpace(out + " " + errString(err))
	})
	if strings.Contains(out, "correct horse") || strings.Contains(out, "password") {
		t.Errorf("the password from a file is printed:\n%s", out)
	}
	for _, f := range []string{"alice.crt", "alice.key", "ca.crt", "alice.p12"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("output does not list %s:\n%s", f, out)
		}
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	for _, f := range []string{"local_api_credentials.yaml", "bouncer-tls.yaml"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("an admin certificate came with a client config %s", f)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "alice.p12")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("alice.p12 mode: %v %v", st, err)
	}
	leaf := leafOf(t, filepath.Join(dir, "alice.crt"))
	if leaf.Subject.CommonName != "alice" || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{"admin-ou"}) {
		t.Errorf("admin certificate subject %v", leaf.Subject)
	}
	p12Opens(t, filepath.Join(dir, "alice.p12"), pwFile, true)

	// a generated password: printed once, on stdout, and not in the log
	dir2 := filepath.Join(base, "bob")
	out2 := n1.MustCLI("cert", "issue", "admin", "bob", "--out", dir2)
	m := regexp.MustCompile(`PKCS#12 password .*: ([0-9a-f]{32})\n`).FindStringSubmatch(out2)
	if m == nil {
		t.Fatalf("no generated password in the output:\n%s", out2)
	}
	gen := filepath.Join(base, "gen")
	if err := os.WriteFile(gen, []byte(m[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	p12Opens(t, filepath.Join(dir2, "bob.p12"), gen, true)
	p12Opens(t, filepath.Join(dir2, "bob.p12"), pwFile, false)
	if strings.Contains(n1.proc.LogTail(1<<20), m[1]) {
		t.Error("the generated PKCS#12 password is in the node's log")
	}

	// bad input: one line, non-zero exit, nothing issued
	if _, err := n1.CLI("cert", "issue", "agent", "carol", "--out", filepath.Join(base, "carol"), "--p12-password-file", pwFile); err == nil ||
		!strings.Contains(err.Error(), "--p12-password-file is for admin certificates") {
		t.Errorf("agent with --p12-password-file: %v", err)
	}
	if _, err := n1.CLI("cert", "issue", "admin", "dave", "--out", filepath.Join(base, "dave"), "--p12-password-file", filepath.Join(base, "missing")); err == nil {
		t.Error("missing password file accepted")
	}
	if _, err := n1.CLI("cert", "token", "admin", "eve"); err == nil {
		t.Error("a one-time token was minted for an admin")
	}
	roles := map[string]string{}
	for _, ci := range listCerts(t, n1) {
		roles[ci.Name] = string(ci.Role)
	}
	if roles["alice"] != "admin" || roles["bob"] != "admin" || roles["dave"] != "" || roles["carol"] != "" {
		t.Errorf("cert list roles: %v", roles)
	}

	// the operator certificate is neither an agent nor a bouncer
	asBouncer := bouncerTLSFiles{Cert: filepath.Join(dir, "alice.crt"), Key: filepath.Join(dir, "alice.key"), CA: filepath.Join(dir, "ca.crt")}
	if code, _, err := liveStatus(certLiveBouncer(t, asBouncer, n1.URL), "192.0.2.1"); code != http.StatusForbidden {
		t.Errorf("admin certificate used by a bouncer: GET /v1/decisions status %d (err %v), want 403", code, err)
	}
	asAgent := agentCredentials{URL: n1.URL, CACertPath: asBouncer.CA, CertPath: asBouncer.Cert, KeyPath: asBouncer.Key}
	if code, err := certLogin(newCertAgent(t, asAgent, n1.URL)); code != http.StatusUnauthorized {
		t.Errorf("admin certificate used by an agent: POST /v1/watchers/login status %d (err %v), want 401", code, err)
	}

	// the issues are in the audit trail (who, route, name and role)
	recs, err := auditList(n1, 50)
	if err != nil {
		t.Fatal(err)
	}
	issued := 0
	for _, r := range recs {
		if r.Action == "POST /pki/issue" && r.Who == cliWho() && r.Node == n1.ID &&
			(r.Detail == "name=alice role=admin" || r.Detail == "name=bob role=admin") {
			issued++
		}
	}
	if issued != 2 {
		t.Errorf("audit trail: %d admin issues recorded, want 2: %+v", issued, recs)
	}
}

// p12Opens checks with OpenSSL (skipped when it is not installed) that the
// PKCS#12 file opens with the password in pwFile (or, ok false, does not).
func p12Opens(t *testing.T, path, pwFile string, ok bool) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("openssl not installed: PKCS#12 check skipped")
		return
	}
	out, err := exec.Command("openssl", "pkcs12", "-in", path, "-passin", "file:"+pwFile, "-nodes").CombinedOutput()
	switch {
	case ok && err != nil:
		t.Errorf("openssl cannot open %s: %v\n%s", path, err, out)
	case ok && (!strings.Contains(string(out), "PRIVATE KEY") || strings.Count(string(out), "BEGIN CERTIFICATE") != 3):
		t.Errorf("%s: want a key and three certificates (leaf, intermediate, root):\n%s", path, out)
	case !ok && err == nil:
		t.Errorf("openssl opened %s with a wrong password", path)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
