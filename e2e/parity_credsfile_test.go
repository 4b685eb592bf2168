package e2e

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-openapi/strfmt"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/csconfig"
	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// loadWithCrowdSec loads a local_api_credentials.yaml with crowdsec's own
// loader (csconfig.LocalApiClientCfg.Load: strict keys, ca_cert_path into
// apiclient.CaCertPool), builds the agent's client from it, logs in with
// its login and password and makes one JWT call. apiclient's TLS globals
// are held for the whole check and reset after.
func loadWithCrowdSec(t *testing.T, path string) *csconfig.ApiCredentialsCfg {
	t.Helper()

	apiclientTLS.Lock()
	defer func() {
		apiclient.CaCertPool, apiclient.Cert, apiclient.InsecureSkipVerify = nil, nil, false
		apiclientTLS.Unlock()
	}()
	cfg := csconfig.LocalApiClientCfg{CredentialsFilePath: path}
	if err := cfg.Load(); err != nil {
		b, _ := os.ReadFile(path)
		t.Fatalf("crowdsec refuses %s: %v\n%s", path, err, b)
	}
	cr := cfg.Credentials
	u, err := url.Parse(cr.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := apiclient.NewClient(&apiclient.Config{
		MachineID:     cr.Login,
		Password:      strfmt.Password(cr.Password),
		URL:           u,
		VersionPrefix: "v1",
		UserAgent:     watcherUA,
		UpdateScenario: func(context.Context) ([]string, error) {
			return testScenarios, nil
		},
	})
	status, err := call("Auth.AuthenticateWatcher", func(ctx context.Context) (int, error) {
		pw := strfmt.Password(cr.Password)
		_, resp, err := c.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{MachineID: &cr.Login, Password: &pw,
			Scenarios: testScenarios})
		return statusOf(resp), err
	})
	if err != nil || status != 200 {
		t.Fatalf("login with %s: %d %v", path, status, err)
	}
	ok, err := call("HeartBeat.Ping", func(ctx context.Context) (bool, error) {
		ok, _, err := c.HeartBeat.Ping(ctx)
		return ok, err
	})
	if err != nil || !ok {
		t.Fatalf("heartbeat with %s: %v %v", path, ok, err)
	}
	return cr
}

// `machines add -f` on a node whose HTTPS uses the built-in CA: the file
// names https, the node's own address and a CA bundle written beside it;
// crowdsec's loader takes it as written and the agent logs in. With -f -
// the file names the node's own copy of the CA.
func TestParityCredentialsFileBuiltinCA(t *testing.T) {
	sc := newSecureCluster(t)
	n1 := sc.Found()

	dir := t.TempDir()
	path := filepath.Join(dir, "local_api_credentials.yaml")
	n1.MustCLI("machines", "add", "agent-ca", "-f", path)
	cr := loadWithCrowdSec(t, path)
	if cr.URL != n1.URL || cr.CACertPath != filepath.Join(dir, "halapi-ca.crt") {
		t.Fatalf("file: url %s ca_cert_path %s; want %s and the bundle beside it", cr.URL, cr.CACertPath, n1.URL)
	}
	want, _ := os.ReadFile(sc.CAFile)
	if got, err := os.ReadFile(cr.CACertPath); err != nil || string(got) != string(want) {
		t.Fatalf("CA bundle differs from the cluster root (%v)", err)
	}

	out := n1.MustCLI("machines", "add", "agent-stdout", "-f", "-")
	path2 := filepath.Join(t.TempDir(), "creds.yaml")
	if err := os.WriteFile(path2, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if cr := loadWithCrowdSec(t, path2); !strings.HasSuffix(cr.CACertPath, filepath.Join("pki", "ca.crt")) {
		t.Fatalf("stdout file names %s, want the node's pki/ca.crt", cr.CACertPath)
	}

	// cert issue without -u names the node's URL too
	certDir := t.TempDir()
	n1.MustCLI("cert", "issue", "agent", "agent-cert", "--out", certDir)
	if c := loadAgentCredentials(t, filepath.Join(certDir, "local_api_credentials.yaml")); c.URL != n1.URL {
		t.Fatalf("cert issue wrote url %s, want %s", c.URL, n1.URL)
	}
}

// On a plain-HTTP cluster (loopback), the file written on any node names
// that node's http URL and no CA, and works on every node's URL it names.
func TestParityCredentialsFilePlainCluster(t *testing.T) {
	c := StartCluster(t, 3, 150)
	for _, nd := range c.Nodes {
		path := filepath.Join(t.TempDir(), "creds.yaml")
		nd.MustCLI("machines", "add", "agent-"+nd.ID, "-f", path)
		cr := loadWithCrowdSec(t, path)
		if cr.URL != "http://"+nd.Addr+"/" || cr.CACertPath != "" {
			t.Fatalf("%s: url %s ca_cert_path %q; want http://%s/ and none", nd.ID, cr.URL, cr.CACertPath, nd.Addr)
		}
	}
}
