package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoClientCert: the connection carries no client certificate, so the
// request does not use TLS auth (fall back to password / API key).
var ErrNoClientCert = errors.New("no client certificate")

// VerifierConfig configures a ClientVerifier; it mirrors CrowdSec's
// api.server.tls keys.
type VerifierConfig struct {
	// AgentOUs and BouncerOUs are agents_allowed_ou and
	// bouncers_allowed_ou (defaults agent-ou and bouncer-ou). An empty
	// string is an error; duplicates are dropped.
	AgentOUs, BouncerOUs []string
	// AdminOUs are the OUs of operator certificates (the web console;
	// --admins-allowed-ou, default admin-ou), same rules. An OU may not be
	// both an admin OU and an agent or bouncer OU. Admin certificates are
	// accepted from the cluster CA only, never from CABundles.
	AdminOUs []string
	// CABundles are ca_cert_path files: PEM CAs trusted for client
	// certificates besides the cluster CA (external CAs).
	CABundles []string
	// SystemRoots adds the system pool, as CrowdSec does; off by default.
	SystemRoots bool
	// CRLPath is crl_path: a PEM file of X509 CRL blocks for external CAs.
	// It must exist and parse at start; it is re-read when its mtime or
	// size changes (checked at most every 5 s); a broken reload keeps the
	// previous content.
	CRLPath string
	// OCSP queries the OCSP servers client certificates list (as CrowdSec
	// always does; see ocsp.go). OCSPCache is cache_expiration (default
	// 1 h).
	OCSP      bool
	OCSPCache time.Duration
	Logger    *slog.Logger
}

// ClientVerifier applies CrowdSec's TLS client-certificate rules
// (lapi.md §2.4) with the cluster CA's revocations read from the FSM, so a
// revoked certificate is refused by every node as soon as it has applied
// the revocation. Certificates of external CAs are also checked against
// the CRL file and, when enabled, OCSP (halapi's CA lists no OCSP server).
type ClientVerifier struct {
	store      Store // may be nil: external CAs only
	agentOUs   []string
	bouncerOUs []string
	adminOUs   []string
	bundles    []*x509.Certificate
	system     bool
	crl        *crlFile
	ocsp       *ocspChecker
	log        *slog.Logger
	now        func() time.Time

	mu      sync.Mutex
	ours    *x509.Certificate // cluster root, parsed from the FSM once there
	pool    *x509.CertPool
	poolFor *x509.Certificate
	tlsCfg  atomic.Pointer[tlsCache]
}

type tlsCache struct {
	pool *x509.CertPool
	cfg  *tls.Config
}

func cleanOUs(list []string, def string) ([]string, error) {
	if len(list) == 0 {
		return []string{def}, nil
	}
	var out []string
	for _, ou := range list {
		if ou == "" {
			return nil, errors.New("allowed_ou configuration contains invalid empty string")
		}
		if !slices.Contains(out, ou) {
			out = append(out, ou)
		}
	}
	return out, nil
}

// NewClientVerifier builds a verifier; store (the FSM) may be nil when the
// built-in CA is not used.
func NewClientVerifier(store Store, cfg VerifierConfig) (*ClientVerifier, error) {
	v := &ClientVerifier{store: store, system: cfg.SystemRoots, log: cfg.Logger, now: time.Now}
	if v.log == nil {
		v.log = slog.Default()
	}
	var err error
	if v.agentOUs, err = cleanOUs(cfg.AgentOUs, DefaultAgentOU); err != nil {
		return nil, err
	}
	if v.bouncerOUs, err = cleanOUs(cfg.BouncerOUs, DefaultBouncerOU); err != nil {
		return nil, err
	}
	if v.adminOUs, err = cleanOUs(cfg.AdminOUs, DefaultAdminOU); err != nil {
		return nil, err
	}
	for _, ou := range v.adminOUs {
		if slices.Contains(v.agentOUs, ou) || slices.Contains(v.bouncerOUs, ou) {
			return nil, fmt.Errorf("OU %q is both an admin OU and an agent or bouncer OU: an agent's certificate would sign in to the console", ou)
		}
	}
	for _, p := range cfg.CABundles {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("ca_cert_path: %w", err)
		}
		certs, err := parseCerts(b)
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("ca_cert_path %s: no usable certificate", p)
		}
		v.bundles = append(v.bundles, certs...)
	}
	if cfg.OCSP {
		v.ocsp = newOCSPChecker(cfg.OCSPCache, func() time.Time { return v.now() }, v.log)
	}
	if cfg.CRLPath != "" {
		v.crl = &crlFile{path: cfg.CRLPath, log: v.log}
		if err := v.crl.load(); err != nil {
			return nil, fmt.Errorf("crl_path: %w", err)
		}
	}
	return v, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// clusterRoot returns the cluster root once the FSM holds the CA.
func (v *ClientVerifier) clusterRoot() *x509.Certificate {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.ours != nil || v.store == nil {
		return v.ours
	}
	raw := v.store.Config(KeyCA)
	if len(raw) == 0 {
		return nil
	}
	var m material
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	if c, err := x509.ParseCertificate(m.RootCert); err == nil {
		v.ours = c
	}
	return v.ours
}

// ClientCAs returns the pool client certificates are verified against:
// the cluster root, the CA bundles and, if configured, the system pool.
func (v *ClientVerifier) ClientCAs() *x509.CertPool {
	root := v.clusterRoot()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.pool != nil && v.poolFor == root {
		return v.pool
	}
	var pool *x509.CertPool
	if v.system {
		if p, err := x509.SystemCertPool(); err == nil {
			pool = p
		}
	}
	if pool == nil {
		pool = x509.NewCertPool()
	}
	if root != nil {
		pool.AddCert(root)
	}
	for _, c := range v.bundles {
		pool.AddCert(c)
	}
	v.pool, v.poolFor = pool, root
	return pool
}

// ServerTLS returns base (cloned) set up to ask for client certificates
// (VerifyClientCertIfGiven, CrowdSec's default) against ClientCAs, which
// picks up the cluster root as soon as it is replicated here.
func (v *ClientVerifier) ServerTLS(base *tls.Config) *tls.Config {
	if base == nil {
		base = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	build := func() *tls.Config {
		pool := v.ClientCAs()
		if c := v.tlsCfg.Load(); c != nil && c.pool == pool {
			return c.cfg
		}
		cfg := base.Clone()
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		cfg.ClientCAs = pool
		v.tlsCfg.Store(&tlsCache{pool: pool, cfg: cfg})
		return cfg
	}
	out := build().Clone()
	out.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return build(), nil }
	return out
}

// HasClientCert reports whether the request "uses TLS auth" (CrowdSec:
// as soon as the connection carries a peer certificate).
func HasClientCert(cs *tls.ConnectionState) bool {
	return cs != nil && len(cs.PeerCertificates) > 0
}

// Verify applies lapi.md §2.4 to a request's TLS state for role (agent or
// bouncer) and returns the identity, the leaf's CN. ErrNoClientCert means
// the request does not use TLS auth at all. For RoleAdmin see verifyAdmin.
func (v *ClientVerifier) Verify(cs *tls.ConnectionState, role Role) (string, error) {
	if !HasClientCert(cs) {
		return "", ErrNoClientCert
	}
	if role == RoleAdmin {
		return v.verifyAdmin(cs)
	}
	// 1. a verified chain must exist
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", errors.New("no verified cert in request")
	}
	leaf := cs.VerifiedChains[0][0]
	// 2. OU
	var allowed []string
	switch role {
	case RoleAgent:
		allowed = v.agentOUs
	case RoleBouncer:
		allowed = v.bouncerOUs
	default:
		return "", fmt.Errorf("unknown role %q", role)
	}
	if !slices.ContainsFunc(leaf.Subject.OrganizationalUnit, func(ou string) bool { return slices.Contains(allowed, ou) }) {
		return "", fmt.Errorf("client certificate OU %v doesn't match expected OU %v", leaf.Subject.OrganizationalUnit, allowed)
	}
	// 3. validity window
	now := v.now()
	if now.Before(leaf.NotBefore) {
		return "", errors.New("client certificate is not yet valid")
	}
	if now.After(leaf.NotAfter) {
		return "", errors.New("client certificate is expired")
	}
	// 4. revocation, every chain, every certificate but the root
	if err := v.checkRevocation(cs.VerifiedChains); err != nil {
		return "", err
	}
	// 5. identity
	return leaf.Subject.CommonName, nil
}

// verifyAdmin accepts an operator certificate: the peer's leaf, with the
// intermediates it sent, must chain to the cluster root alone (whatever
// the listener's TLS settings verified, and never to an external CA
// bundle or the system pool), be usable for client auth, carry an admin
// OU, be within its validity window and not be revoked in the FSM. It
// returns the leaf's CN.
func (v *ClientVerifier) verifyAdmin(cs *tls.ConnectionState) (string, error) {
	root := v.clusterRoot()
	if root == nil {
		return "", errors.New("the cluster CA is not ready on this node")
	}
	leaf := cs.PeerCertificates[0]
	if !slices.ContainsFunc(leaf.Subject.OrganizationalUnit, func(ou string) bool { return slices.Contains(v.adminOUs, ou) }) {
		return "", fmt.Errorf("client certificate OU %v doesn't match expected OU %v", leaf.Subject.OrganizationalUnit, v.adminOUs)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	now := v.now()
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		if now.Before(leaf.NotBefore) {
			return "", errors.New("client certificate is not yet valid")
		}
		if now.After(leaf.NotAfter) {
			return "", errors.New("client certificate is expired")
		}
		return "", fmt.Errorf("client certificate not issued by the cluster CA: %w", err)
	}
	for _, chain := range chains {
		for _, crt := range chain[:len(chain)-1] {
			if IsRevokedIn(v.store, crt.SerialNumber.String()) {
				return "", fmt.Errorf("client certificate is revoked (serial %s)", crt.SerialNumber)
			}
		}
	}
	return leaf.Subject.CommonName, nil
}

func (v *ClientVerifier) checkRevocation(chains [][]*x509.Certificate) error {
	ours := v.clusterRoot()
	var crls []crlEntry
	if v.crl != nil {
		crls = v.crl.current(v.now())
	}
	for _, chain := range chains {
		if len(chain) < 2 {
			continue
		}
		top := chain[len(chain)-1]
		fromUs := ours != nil && (top.Equal(ours) || bytes.Equal(top.RawIssuer, ours.RawSubject) && top.CheckSignatureFrom(ours) == nil)
		for i := len(chain) - 2; i >= 0; i-- {
			crt, issuer := chain[i], chain[i+1]
			if fromUs && v.store != nil && IsRevokedIn(v.store, crt.SerialNumber.String()) {
				return fmt.Errorf("client certificate is revoked (serial %s)", crt.SerialNumber)
			}
			if v.ocsp != nil && v.ocsp.revoked(crt, issuer) {
				return fmt.Errorf("certificate revoked by OCSP (serial %s)", crt.SerialNumber)
			}
			for _, e := range crls {
				if !bytes.Equal(e.rl.RawIssuer, issuer.RawSubject) || e.rl.CheckSignatureFrom(issuer) != nil {
					continue
				}
				if _, ok := e.serials[crt.SerialNumber.String()]; ok {
					return fmt.Errorf("client certificate is revoked by CRL (serial %s)", crt.SerialNumber)
				}
			}
		}
	}
	return nil
}

type crlEntry struct {
	rl      *x509.RevocationList
	serials map[string]struct{}
}

// crlFile is crl_path, reloaded when it changes.
type crlFile struct {
	path string
	log  *slog.Logger

	mu        sync.Mutex
	entries   []crlEntry
	mod       time.Time
	size      int64
	lastCheck time.Time
}

func parseCRLs(b []byte) ([]crlEntry, error) {
	var out []crlEntry
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "X509 CRL" {
			continue
		}
		rl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, err
		}
		e := crlEntry{rl: rl, serials: map[string]struct{}{}}
		for _, r := range rl.RevokedCertificateEntries {
			e.serials[r.SerialNumber.String()] = struct{}{}
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errors.New("no X509 CRL block found")
	}
	return out, nil
}

func (f *crlFile) load() error {
	st, err := os.Stat(f.path)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		return err
	}
	entries, err := parseCRLs(b)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, e := range entries {
		if now.After(e.rl.NextUpdate) && !e.rl.NextUpdate.IsZero() || now.Before(e.rl.ThisUpdate) {
			f.log.Warn("pki: CRL outside its validity window, still used", "path", f.path, "issuer", e.rl.Issuer.String())
		}
	}
	f.mu.Lock()
	f.entries, f.mod, f.size = entries, st.ModTime(), st.Size()
	f.mu.Unlock()
	return nil
}

func (f *crlFile) current(now time.Time) []crlEntry {
	f.mu.Lock()
	check := now.Sub(f.lastCheck) >= 5*time.Second
	if check {
		f.lastCheck = now
	}
	entries, mod, size := f.entries, f.mod, f.size
	f.mu.Unlock()
	if check {
		if st, err := os.Stat(f.path); err == nil && (!st.ModTime().Equal(mod) || st.Size() != size) {
			if err := f.load(); err != nil {
				f.log.Warn("pki: CRL reload failed, keeping the previous one", "path", f.path, "err", err)
				f.mu.Lock()
				f.mod, f.size = st.ModTime(), st.Size() // warn once per change
				f.mu.Unlock()
			} else {
				f.mu.Lock()
				entries = f.entries
				f.mu.Unlock()
			}
		}
	}
	return entries
}
