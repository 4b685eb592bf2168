package pki

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

// stepBinary finds the real step CLI: $HALAPI_STEP, else `step` on PATH.
// Install it with
//
//	GOBIN=/tmp/stepbin go install github.com/smallstep/cli/cmd/step@v0.29.0
//	HALAPI_STEP=/tmp/stepbin/step go test ./pki/
func stepBinary(t *testing.T) string {
	if p := os.Getenv("HALAPI_STEP"); p != "" {
		return p
	}
	p, err := exec.LookPath("step")
	if err != nil {
		t.Skip("the step CLI is not installed: set HALAPI_STEP or put `step` on PATH " +
			"(go install github.com/smallstep/cli/cmd/step@v0.29.0)")
	}
	return p
}

// The real step CLI gets, renews and revokes a certificate against a
// node's API with a halapi one-time token.
func TestStepCLI(t *testing.T) {
	step := stepBinary(t)
	c := newCluster(t)
	v, err := NewClientVerifier(c.r.fsms[1], VerifierConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiServer(t, c.b, v, nil)
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, c.a.RootPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(dir, "agent.crt"), filepath.Join(dir, "agent.key")
	run := func(args ...string) ([]byte, error) {
		cmd := exec.Command(step, args...)
		cmd.Env = append(os.Environ(), "STEPPATH="+filepath.Join(dir, "step"), "HOME="+dir)
		return cmd.CombinedOutput()
	}
	tok, err := c.a.NewToken("agent-cli", RoleAgent, 0)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run("ca", "certificate", "agent-cli", crt, key, "--token", tok,
		"--ca-url", srv.URL, "--root", root); err != nil {
		t.Fatalf("step ca certificate: %v\n%s", err, out)
	}
	b, err := os.ReadFile(crt)
	if err != nil {
		t.Fatal(err)
	}
	chain := parseChainPEM(t, b)
	leaf := chain[0]
	if leaf.Subject.CommonName != "agent-cli" || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{DefaultAgentOU}) {
		t.Fatalf("step got %v", leaf.Subject)
	}
	if c.b.IsRevoked(leaf.SerialNumber.String()) {
		t.Fatal("fresh certificate revoked")
	}

	// the token was spent
	if out, err := run("ca", "certificate", "agent-cli", filepath.Join(dir, "x.crt"), filepath.Join(dir, "x.key"),
		"--token", tok, "--ca-url", srv.URL, "--root", root); err == nil {
		t.Fatalf("a used token worked again:\n%s", out)
	}

	// renew over mTLS
	if out, err := run("ca", "renew", crt, key, "--ca-url", srv.URL, "--root", root, "--force"); err != nil {
		t.Fatalf("step ca renew: %v\n%s", err, out)
	}
	b, _ = os.ReadFile(crt)
	renewed := parseChainPEM(t, b)[0]
	if renewed.SerialNumber.Cmp(leaf.SerialNumber) == 0 || !slices.Equal(renewed.Subject.OrganizationalUnit, []string{DefaultAgentOU}) {
		t.Fatalf("renewed: serial %s subject %v", renewed.SerialNumber, renewed.Subject)
	}

	// revoke over mTLS
	if out, err := run("ca", "revoke", "--cert", crt, "--key", key, "--ca-url", srv.URL, "--root", root); err != nil {
		t.Fatalf("step ca revoke: %v\n%s", err, out)
	}
	if !c.a.IsRevoked(renewed.SerialNumber.String()) {
		t.Fatal("revoked by step but not in the FSM")
	}
}
