package pki

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/smallstep/certificates/api"
	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/x509util"
	"gopkg.in/yaml.v3"
)

// ClientMaterial is an agent's or bouncer's certificate chain, key and the
// cluster root, all PEM.
type ClientMaterial struct {
	CertPEM []byte
	KeyPEM  []byte
	CAPEM   []byte
}

// TokenInfo is what a one-time token says about itself (unverified).
type TokenInfo struct {
	Subject     string
	Role        Role
	Fingerprint string
	Expiry      time.Time
}

// InspectToken reads a one-time token's claims without verifying it (the
// CA verifies it when it is used).
func InspectToken(tok string) (*TokenInfo, error) {
	t, err := jose.ParseSigned(tok)
	if err != nil {
		return nil, fmt.Errorf("not a halapi token: %w", err)
	}
	var cl tokenClaims
	if err := t.UnsafeClaimsWithoutVerification(&cl); err != nil {
		return nil, fmt.Errorf("not a halapi token: %w", err)
	}
	info := &TokenInfo{Subject: cl.Subject, Fingerprint: cl.SHA}
	if cl.Halapi != nil {
		info.Role = Role(cl.Halapi.Role)
	}
	if cl.Expiry != nil {
		info.Expiry = cl.Expiry.Time()
	}
	if info.Subject == "" || len(info.Fingerprint) != 2*sha256.Size {
		return nil, errors.New("not a halapi token: no subject or CA fingerprint")
	}
	return info, nil
}

// Enroll is `halapi agent enroll`: it trades a one-time token for a client
// certificate at any node's API (apiURL, https). The root is fetched and
// checked against the fingerprint carried in the token, the key is made
// here and never leaves this machine, the CSR goes to POST /sign over a
// connection pinned to that root.
func Enroll(ctx context.Context, apiURL, tok string) (*ClientMaterial, error) {
	info, err := InspectToken(tok)
	if err != nil {
		return nil, err
	}
	base, err := apiBase(apiURL)
	if err != nil {
		return nil, err
	}
	root, err := fetchPinnedRoot(ctx, base, info.Fingerprint)
	if err != nil {
		return nil, err
	}

	key, err := newKey()
	if err != nil {
		return nil, err
	}
	csr, err := x509util.CreateCertificateRequest(info.Subject, []string{info.Subject}, key)
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(api.SignRequest{CsrPEM: api.NewCertificateRequest(csr), OTT: tok})
	if err != nil {
		return nil, err
	}
	pinned := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pinnedTLS(root)}}
	defer pinned.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/sign", bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := pinned.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sign at %s: %w", base, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var m struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &m)
		return nil, fmt.Errorf("sign at %s: HTTP %d: %s", base, resp.StatusCode, m.Message)
	}
	var sr api.SignResponse
	if err := json.Unmarshal(body, &sr); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	chain := sr.CertChainPEM
	if len(chain) == 0 {
		chain = []api.Certificate{sr.ServerPEM, sr.CaPEM}
	}
	m := &ClientMaterial{CAPEM: chainPEM([]*x509.Certificate{root})}
	for _, c := range chain {
		if c.Certificate == nil {
			continue
		}
		m.CertPEM = append(m.CertPEM, chainPEM([]*x509.Certificate{c.Certificate})...)
	}
	if m.KeyPEM, err = keyPEM(key); err != nil {
		return nil, err
	}
	if _, err := tls.X509KeyPair(m.CertPEM, m.KeyPEM); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return m, nil
}

// agentCredentials is CrowdSec's local_api_credentials.yaml with TLS auth
// (clients.md §2.1: no login/password next to a certificate).
type agentCredentials struct {
	URL        string `yaml:"url"`
	CACertPath string `yaml:"ca_cert_path"`
	CertPath   string `yaml:"cert_path"`
	KeyPath    string `yaml:"key_path"`
}

// bouncerTLS is the part of a go-cs-bouncer configuration that sets up
// certificate auth (clients.md §2.2).
type bouncerTLS struct {
	APIURL     string `yaml:"api_url"`
	CertPath   string `yaml:"cert_path"`
	KeyPath    string `yaml:"key_path"`
	CACertPath string `yaml:"ca_cert_path"`
}

// Names of the files WriteClientFiles creates besides <name>.crt/.key.
const (
	ClientCAFile      = "ca.crt"
	AgentConfigFile   = "local_api_credentials.yaml"
	BouncerConfigFile = "bouncer-tls.yaml"
)

// WriteClientFiles writes <name>.crt, <name>.key (0600), ca.crt and a
// ready configuration into dir: for an agent a local_api_credentials.yaml
// (point crowdsec's api.client.credentials_path at it), for a bouncer a
// bouncer-tls.yaml with the keys to merge into the bouncer's YAML, for an
// admin none (see WriteAdminP12). lapiURL
// is the LAPI URL clients use. It returns the paths written.
func WriteClientFiles(dir string, role Role, name, lapiURL string, m *ClientMaterial) ([]string, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, err
	}
	crt, key, ca := filepath.Join(abs, name+".crt"), filepath.Join(abs, name+".key"), filepath.Join(abs, ClientCAFile)
	var written []string
	write := func(path string, data []byte, mode os.FileMode) error {
		if err := writeFileAtomic(path, data, mode); err != nil {
			return err
		}
		written = append(written, path)
		return nil
	}
	if err := write(key, m.KeyPEM, 0o600); err != nil {
		return written, err
	}
	if err := write(crt, m.CertPEM, 0o644); err != nil {
		return written, err
	}
	if err := write(ca, m.CAPEM, 0o644); err != nil {
		return written, err
	}
	var cfg any
	var cfgPath string
	switch role {
	case RoleAgent:
		cfg = agentCredentials{URL: lapiURL, CACertPath: ca, CertPath: crt, KeyPath: key}
		cfgPath = filepath.Join(abs, AgentConfigFile)
	case RoleBouncer:
		cfg = bouncerTLS{APIURL: lapiURL, CertPath: crt, KeyPath: key, CACertPath: ca}
		cfgPath = filepath.Join(abs, BouncerConfigFile)
	case RoleAdmin:
		return written, nil // no client config; WriteAdminP12 writes the browser's file
	default:
		return written, fmt.Errorf("unknown role %q", role)
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return written, err
	}
	return written, write(cfgPath, b, 0o600)
}
