package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// FileConfig is `halapi agent run --config`'s file.
type FileConfig struct {
	Listen        string   `yaml:"listen"`
	Socket        string   `yaml:"socket,omitempty"`
	SocketGroup   string   `yaml:"socket_group,omitempty"`
	Servers       []string `yaml:"servers"`
	CACertPath    string   `yaml:"ca_cert_path,omitempty"`
	CertPath      string   `yaml:"cert_path,omitempty"`
	KeyPath       string   `yaml:"key_path,omitempty"`
	APIKeyFile    string   `yaml:"api_key_file,omitempty"`
	MetricsListen string   `yaml:"metrics_listen,omitempty"`
	TLSListen     string   `yaml:"tls_listen,omitempty"`
	TLSCertPath   string   `yaml:"tls_cert_path,omitempty"`
	TLSKeyPath    string   `yaml:"tls_key_path,omitempty"`
	LogLevel      string   `yaml:"log_level,omitempty"`
}

// Defaults of the local listeners.
const (
	DefaultListen    = "127.0.0.1:8081"
	DefaultTLSListen = "127.0.0.1:8443"
	DefaultMetrics   = "127.0.0.1:6061"
)

// Names of the files Setup writes next to the enrolled certificate.
const (
	ConfigFile         = "halapi-agent.yaml"
	ListenerCertFile   = "agent-listener.crt"
	ListenerKeyFile    = "agent-listener.key"
	ClientCABundleFile = "agent-ca-bundle.crt"
)

// SetupParams describes an enrolled host for Setup.
type SetupParams struct {
	Dir       string   // where the enrolled files are (absolute)
	CertPath  string   // the enrolled client certificate
	KeyPath   string   // its key
	CAPath    string   // the cluster root
	Servers   []string // node API URLs to bootstrap from
	Listen    string   // plain local listener (API-key and password clients)
	TLSListen string   // TLS local listener (certificate clients)
	// Socket, if set, is the agent's unix socket (password agents and
	// cscli, whose LAPI URL may be a path); SocketGroup its group.
	Socket      string
	SocketGroup string
	Metrics     string
}

// Setup prepares `halapi agent run` on an enrolled host: a certificate
// for the local TLS listener (self-signed, loopback names only), a CA
// bundle for the local clients (the cluster root, to verify nothing else
// but kept for a client that talks to a node directly, plus the listener
// certificate), and the agent's configuration file. It returns the
// paths written and the URL local certificate clients use.
func Setup(p SetupParams) (written []string, clientURL, clientCA string, err error) {
	if p.Listen == "" {
		p.Listen = DefaultListen
	}
	if p.TLSListen == "" {
		p.TLSListen = DefaultTLSListen
	}
	if p.Metrics == "" {
		p.Metrics = DefaultMetrics
	}
	if len(p.Servers) == 0 {
		return nil, "", "", errors.New("no server URL")
	}
	for _, s := range p.Servers {
		if _, err := parseNodeURL(s); err != nil {
			return nil, "", "", fmt.Errorf("server %q: %w", s, err)
		}
	}
	if p.Socket != "" && !filepath.IsAbs(p.Socket) {
		return nil, "", "", fmt.Errorf("socket %q: must be an absolute path", p.Socket)
	}
	host, _, err := net.SplitHostPort(p.TLSListen)
	if err != nil {
		return nil, "", "", fmt.Errorf("TLS listen address %q: %w", p.TLSListen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, "", "", fmt.Errorf("TLS listen address %q: the agent's listeners belong on loopback", p.TLSListen)
	}
	certPEM, keyPEM, err := listenerCert(net.ParseIP(host))
	if err != nil {
		return nil, "", "", err
	}
	root, err := os.ReadFile(p.CAPath)
	if err != nil {
		return nil, "", "", err
	}
	write := func(name string, data []byte, mode os.FileMode) (string, error) {
		path := filepath.Join(p.Dir, name)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, mode); err != nil {
			return "", err
		}
		if err := os.Rename(tmp, path); err != nil {
			return "", err
		}
		written = append(written, path)
		return path, nil
	}
	lkey, err := write(ListenerKeyFile, keyPEM, 0o600)
	if err != nil {
		return written, "", "", err
	}
	lcrt, err := write(ListenerCertFile, certPEM, 0o644)
	if err != nil {
		return written, "", "", err
	}
	bundle, err := write(ClientCABundleFile, append(append([]byte{}, root...), certPEM...), 0o644)
	if err != nil {
		return written, "", "", err
	}
	cfg := FileConfig{Listen: p.Listen, Socket: p.Socket, SocketGroup: p.SocketGroup, Servers: p.Servers, CACertPath: p.CAPath, CertPath: p.CertPath, KeyPath: p.KeyPath,
		MetricsListen: p.Metrics, TLSListen: p.TLSListen, TLSCertPath: lcrt, TLSKeyPath: lkey, LogLevel: "info"}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return written, "", "", err
	}
	if _, err := write(ConfigFile, b, 0o600); err != nil {
		return written, "", "", err
	}
	return written, "https://" + p.TLSListen + "/", bundle, nil
}

// listenerCert makes the local TLS listener's certificate: ECDSA P-256,
// server auth, 127.0.0.1, ::1 and localhost only, ten years (it never
// leaves the host; re-run enroll to replace it).
func listenerCert(ip net.IP) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "halapi agent local listener"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, ip},
		// not a CA: it cannot vouch for any other certificate
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}
