package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// IdentityFiles are the host's enrolled certificate and key on disk. The
// agent reloads them when they change (another tool renewed them) and
// renews the certificate itself at two thirds of its lifetime through the
// cluster's step-CA API (POST /renew over mTLS with the current
// certificate: the same key, a new certificate), rewriting CertPath. The
// clients that share the files pick the new certificate up when they
// restart; until then the agent still accepts their old one, since it
// matches them by key (see Handler).
type IdentityFiles struct {
	CertPath, KeyPath string
}

// identity is the certificate the agent presents upstream.
func (a *Agent) identity() *tls.Certificate { return a.ident.Load() }

func loadIdentity(f *IdentityFiles) (*tls.Certificate, time.Time, error) {
	st, err := os.Stat(f.CertPath)
	if err != nil {
		return nil, time.Time{}, err
	}
	c, err := tls.LoadX509KeyPair(f.CertPath, f.KeyPath)
	if err != nil {
		return nil, time.Time{}, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, time.Time{}, err
		}
	}
	return &c, st.ModTime(), nil
}

// renewAt returns when c is due for renewal: two thirds into its
// lifetime, counted from when the agent got it (since) if that is later
// than NotBefore — step-CA backdates NotBefore (1 min by default), which
// for short certificates would make a fresh renewal due at once.
func renewTime(c *tls.Certificate, since time.Time) time.Time {
	start := c.Leaf.NotBefore
	if since.After(start) {
		start = since
	}
	return start.Add(c.Leaf.NotAfter.Sub(start) * 2 / 3)
}

// renewDue reports whether c, obtained at since, is due for renewal.
func renewDue(c *tls.Certificate, since, now time.Time) bool {
	if c == nil || c.Leaf == nil {
		return false
	}
	return !now.Before(renewTime(c, since))
}

// identityLoop reloads changed files and renews when due: every
// IdentityEvery, or sooner when the renewal falls due before that.
func (a *Agent) identityLoop(ctx context.Context) {
	var backoff time.Duration
	for {
		wait := a.cfg.IdentityEvery
		if c := a.identity(); c != nil && c.Leaf != nil {
			if d := time.Until(renewTime(c, a.identMod)); d < wait {
				wait = max(d, 100*time.Millisecond)
			}
		}
		if backoff > 0 {
			wait = backoff
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		a.reloadIdentity()
		if !renewDue(a.identity(), a.identMod, time.Now()) {
			backoff = 0
			continue
		}
		if err := a.renewIdentity(ctx); err != nil {
			backoff = min(max(2*backoff, time.Second), time.Minute)
			a.log.Warn("identity certificate renewal failed", "err", err, "retry_in", backoff)
			continue
		}
		backoff = 0
	}
}

func (a *Agent) reloadIdentity() {
	f := a.cfg.IdentityFiles
	st, err := os.Stat(f.CertPath)
	if err != nil || st.ModTime().Equal(a.identMod) {
		return
	}
	c, mod, err := loadIdentity(f)
	if err != nil {
		a.log.Warn("identity certificate changed on disk but does not load", "path", f.CertPath, "err", err)
		return
	}
	if !bytes.Equal(c.Leaf.RawSubjectPublicKeyInfo, a.identitySPKI) {
		a.log.Warn("identity certificate on disk has another key: restart the agent to use it", "path", f.CertPath)
		a.identMod = mod
		return
	}
	a.ident.Store(c)
	a.identMod = mod
	a.dropIdentityConns()
	a.log.Info("identity certificate reloaded", "serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter)
}

// renewIdentity asks a healthy node's CA for a renewal of the identity.
func (a *Agent) renewIdentity(ctx context.Context) error {
	var lastErr error = errors.New("no healthy node")
	for _, n := range a.candidates() {
		if !n.healthy.Load() || n.idTr == nil || n.base.Scheme != "https" {
			continue
		}
		c, err := a.renewAt(ctx, n)
		if err != nil {
			lastErr = fmt.Errorf("%s: %w", n.key, err)
			continue
		}
		a.ident.Store(c)
		a.identityRenewals.Add(1)
		a.dropIdentityConns()
		a.log.Info("identity certificate renewed", "node", n.key, "serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter)
		return nil
	}
	return lastErr
}

func (a *Agent) renewAt(ctx context.Context, n *node) (*tls.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.key+"/renew", http.NoBody)
	req.Header.Set("User-Agent", "halapi-agent")
	resp, err := n.idTr.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/renew answered %s", resp.Status)
	}
	var sr struct {
		Crt   string   `json:"crt"`
		CA    string   `json:"ca"`
		Chain []string `json:"certChain"`
	}
	if err := json.Unmarshal(body, &sr); err != nil {
		return nil, fmt.Errorf("/renew: %w", err)
	}
	chain := sr.Chain
	if len(chain) == 0 {
		chain = []string{sr.Crt, sr.CA}
	}
	var certPEM []byte
	for _, p := range chain {
		certPEM = append(certPEM, []byte(p)...)
	}
	keyPEM, err := os.ReadFile(a.cfg.IdentityFiles.KeyPath)
	if err != nil {
		return nil, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("/renew: %w", err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	if !bytes.Equal(c.Leaf.RawSubjectPublicKeyInfo, a.identitySPKI) {
		return nil, errors.New("/renew returned a certificate for another key")
	}
	// rewrite the file (atomically, same mode) so clients restarted later
	// and the next agent start use the renewal
	var clean []byte
	for _, der := range c.Certificate {
		clean = append(clean, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	path := a.cfg.IdentityFiles.CertPath
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(clean); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, err
	}
	if st, err := os.Stat(path); err == nil {
		a.identMod = st.ModTime()
	}
	return &c, nil
}

// dropIdentityConns closes idle identity connections: a connection keeps
// the certificate of its handshake, new ones present the current one.
func (a *Agent) dropIdentityConns() {
	a.mu.RLock()
	defer a.mu.RUnlock()
	for _, n := range a.nodes {
		if n.idTr != nil {
			n.idTr.CloseIdleConnections()
			n.idRelay.closeIdle(false)
		}
	}
}
