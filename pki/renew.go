package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// RenewerConfig configures a Renewer.
type RenewerConfig struct {
	// Issue returns a fresh certificate, typically CA.IssueServer. It may
	// fail while the CA is not ready here yet; the Renewer retries.
	Issue func(ctx context.Context) (tls.Certificate, error)
	// Initial is served until the first renewal (from Join or
	// LoadIdentity). Without it the Renewer loads Dir, else issues.
	Initial *tls.Certificate
	// Dir, if set, is the identity dir: node.crt and node.key are read
	// from it at start and rewritten after every renewal.
	Dir string
	// Accept tells whether a loaded or initial certificate still fits
	// (SANs, issuer); a refused one is renewed at once.
	Accept func(leaf *x509.Certificate) bool
	// OnRenew is called after each successful renewal.
	OnRenew func(tls.Certificate)
	Logger  *slog.Logger
}

// Renewer keeps a node's certificate fresh: it renews at two thirds of
// the lifetime (retrying with backoff) and serves the current one through
// GetCertificate / GetClientCertificate, so TLS listeners and dialers pick
// up a new certificate without a restart.
type Renewer struct {
	cfg  RenewerConfig
	log  *slog.Logger
	cur  atomic.Pointer[tls.Certificate]
	kick chan struct{}
	mu   sync.Mutex // serializes renewals
	// stale is set when the current certificate must be replaced at once.
	stale atomic.Bool

	now   func() time.Time
	after func(time.Duration) <-chan time.Time
}

// NewRenewer returns a Renewer holding a certificate: Initial, else the
// one in Dir, else a fresh one from Issue.
func NewRenewer(cfg RenewerConfig) (*Renewer, error) {
	r := &Renewer{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), now: time.Now, after: time.After}
	if r.log == nil {
		r.log = slog.Default()
	}
	var initial *tls.Certificate
	if cfg.Initial != nil {
		c := *cfg.Initial
		initial = &c
	} else if cfg.Dir != "" {
		c, err := tls.LoadX509KeyPair(filepath.Join(cfg.Dir, NodeCertFile), filepath.Join(cfg.Dir, NodeKeyFile))
		if err == nil {
			initial = &c
		} else if !errors.Is(err, os.ErrNotExist) {
			r.log.Warn("pki: cannot load the node certificate, issuing a new one", "dir", cfg.Dir, "err", err)
		}
	}
	if initial != nil {
		if err := fillLeaf(initial); err != nil {
			return nil, err
		}
		if r.now().After(initial.Leaf.NotAfter) || (cfg.Accept != nil && !cfg.Accept(initial.Leaf)) {
			r.stale.Store(true)
		}
		r.cur.Store(initial)
	}
	if initial == nil || r.stale.Load() {
		if cfg.Issue == nil {
			if initial == nil {
				return nil, errors.New("pki: renewer has no certificate and no way to issue one")
			}
			return r, nil
		}
		if err := r.Renew(context.Background()); err != nil {
			if initial == nil {
				return nil, err
			}
			r.log.Warn("pki: node certificate needs renewal, keeping the old one for now", "err", err)
		}
	}
	return r, nil
}

func fillLeaf(c *tls.Certificate) error {
	if c.Leaf != nil {
		return nil
	}
	if len(c.Certificate) == 0 {
		return errors.New("pki: empty certificate")
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return err
	}
	c.Leaf = leaf
	return nil
}

// Current returns the certificate being served.
func (r *Renewer) Current() *tls.Certificate { return r.cur.Load() }

// GetCertificate is for tls.Config.GetCertificate.
func (r *Renewer) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := r.cur.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("pki: no node certificate yet")
}

// GetClientCertificate is for tls.Config.GetClientCertificate.
func (r *Renewer) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if c := r.cur.Load(); c != nil {
		return c, nil
	}
	return &tls.Certificate{}, nil
}

// Renew replaces the certificate now.
func (r *Renewer) Renew(ctx context.Context) error {
	if r.cfg.Issue == nil {
		return errors.New("pki: renewer cannot issue")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.cfg.Issue(ctx)
	if err != nil {
		return err
	}
	if err := fillLeaf(&c); err != nil {
		return err
	}
	r.cur.Store(&c)
	r.stale.Store(false)
	if r.cfg.Dir != "" {
		if err := r.persist(&c); err != nil {
			r.log.Warn("pki: cannot save the node certificate", "dir", r.cfg.Dir, "err", err)
		}
	}
	r.log.Info("pki: node certificate renewed", "serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter)
	if r.cfg.OnRenew != nil {
		r.cfg.OnRenew(c)
	}
	return nil
}

func (r *Renewer) persist(c *tls.Certificate) error {
	var certPEM []byte
	for _, der := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return err
	}
	return SaveIdentity(r.cfg.Dir, &JoinResult{CertPEM: certPEM,
		KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})})
}

// Trigger asks Run to renew now (e.g. after the SANs changed).
func (r *Renewer) Trigger() {
	r.stale.Store(true)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// due returns how long to wait before the next renewal.
func (r *Renewer) due() time.Duration {
	c := r.cur.Load()
	if c == nil || c.Leaf == nil || r.stale.Load() {
		return 0
	}
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	at := c.Leaf.NotBefore.Add(life * 2 / 3)
	if d := at.Sub(r.now()); d > 0 {
		return d
	}
	return 0
}

// Run renews until ctx ends.
func (r *Renewer) Run(ctx context.Context) {
	backoff := time.Duration(0)
	for {
		wait := r.due()
		if backoff > 0 {
			wait = backoff
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.after(wait):
			case <-r.kick:
			}
		} else if ctx.Err() != nil {
			return
		}
		if err := r.Renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, time.Second), time.Minute)
			r.log.Warn("pki: node certificate renewal failed", "err", err, "retry_in", backoff)
			continue
		}
		backoff = 0
	}
}

// AcceptNode returns a RenewerConfig.Accept that wants CN nodeID and every
// SAN in sans (a certificate loaded from disk after --api-name or the
// addresses changed is then replaced at once).
func AcceptNode(nodeID string, sans []string) func(*x509.Certificate) bool {
	return func(leaf *x509.Certificate) bool {
		if leaf.Subject.CommonName != nodeID {
			return false
		}
		have := map[string]bool{}
		for _, n := range leaf.DNSNames {
			have[n] = true
		}
		for _, ip := range leaf.IPAddresses {
			have[ip.String()] = true
		}
		for _, s := range sans {
			if ip := net.ParseIP(s); ip != nil {
				s = ip.String()
			}
			if s != "" && !have[s] {
				return false
			}
		}
		return true
	}
}

// NewRenewer returns a Renewer for this node's server certificate (CN
// nodeID, SANs nodeID + sans, OU NodeOU), persisted in dir when set.
func (c *CA) NewRenewer(nodeID string, sans []string, dir string) (*Renewer, error) {
	return NewRenewer(RenewerConfig{
		Issue: func(context.Context) (tls.Certificate, error) { return c.IssueServer(nodeID, sans) },
		Dir:   dir,
		Accept: func(leaf *x509.Certificate) bool {
			return AcceptNode(nodeID, sans)(leaf) && c.issued(leaf) && slices.Contains(leaf.Subject.OrganizationalUnit, c.opts.NodeOU) &&
				!IsRevokedIn(c.store, leaf.SerialNumber.String())
		},
		Logger: c.log,
	})
}

// issued reports whether leaf was signed by this CA's intermediate.
func (c *CA) issued(leaf *x509.Certificate) bool {
	return leaf.CheckSignatureFrom(c.inter) == nil
}
