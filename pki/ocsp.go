package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP checking of client certificates, as CrowdSec's TLS auth does it
// (pkg/apiserver/middlewares/v1/ocsp.go, tls_auth.go):
//
//   - every certificate of a verified chain but the root is checked against
//     the OCSP servers its AIA extension lists, in order; a certificate that
//     lists none is not checked;
//   - "good" accepts, "revoked" refuses; an error or "unknown" tries the
//     next server;
//   - when no server gave an answer the certificate is NOT refused
//     (fail-open, CrowdSec's behaviour: its "assuming the cert is revoked"
//     result is only acted on together with "could check") and the outcome
//     is not cached;
//   - answers are cached per certificate for the cache expiration
//     (CrowdSec's cache_expiration, default 1 h).
//
// Differences: each query is bounded (OCSPTimeout, 64 KiB answer; CrowdSec
// has no timeout), a certificate whose responders all failed is not asked
// again for OCSPRetry (the outcome is the same: accepted), concurrent
// requests with one certificate share one query, and only OCSP answers are
// cached (the cluster CA's revocations and the CRL are checked on every
// request, as before).

const (
	// DefaultOCSPCache is CrowdSec's default cache_expiration.
	DefaultOCSPCache = time.Hour
	// OCSPTimeout bounds one responder query.
	OCSPTimeout = 5 * time.Second
	// OCSPRetry is how long a certificate whose responders all failed is
	// accepted without asking again.
	OCSPRetry = 30 * time.Second
	// ocspCacheCap bounds the cache (entries); past it, expired entries
	// are dropped, then everything.
	ocspCacheCap  = 10000
	maxOCSPAnswer = 64 << 10
)

type ocspResult int

const (
	ocspGood ocspResult = iota
	ocspRevoked
	ocspFailed // no responder answered: fail-open, not cached
)

type ocspEntry struct {
	res ocspResult
	at  time.Time
}

type ocspChecker struct {
	client *http.Client
	ttl    time.Duration
	now    func() time.Time
	log    *slog.Logger

	mu    sync.Mutex
	cache map[string]ocspEntry
	// inflight: one query per certificate at a time; concurrent requests
	// with the same certificate wait for its outcome
	inflight map[string]chan struct{}
}

func newOCSPChecker(ttl time.Duration, now func() time.Time, log *slog.Logger) *ocspChecker {
	if ttl <= 0 {
		ttl = DefaultOCSPCache
	}
	return &ocspChecker{client: &http.Client{Timeout: OCSPTimeout}, ttl: ttl, now: now, log: log,
		cache: map[string]ocspEntry{}, inflight: map[string]chan struct{}{}}
}

func ocspKey(cert, issuer *x509.Certificate) string {
	return string(issuer.RawSubject) + "\x00" + cert.SerialNumber.String()
}

// revoked reports whether OCSP says cert (issued by issuer) is revoked.
func (c *ocspChecker) revoked(cert, issuer *x509.Certificate) bool {
	if len(cert.OCSPServer) == 0 {
		return false
	}
	key := ocspKey(cert, issuer)
	for {
		now := c.now()
		c.mu.Lock()
		if e, ok := c.cache[key]; ok {
			ttl := c.ttl
			if e.res == ocspFailed {
				ttl = OCSPRetry
			}
			if now.Sub(e.at) < ttl {
				c.mu.Unlock()
				return e.res == ocspRevoked
			}
		}
		if wait, busy := c.inflight[key]; busy {
			c.mu.Unlock()
			<-wait
			continue
		}
		done := make(chan struct{})
		c.inflight[key] = done
		c.mu.Unlock()

		res := c.query(cert, issuer)

		c.mu.Lock()
		c.store(key, ocspEntry{res: res, at: now})
		delete(c.inflight, key)
		c.mu.Unlock()
		close(done)
		return res == ocspRevoked
	}
}

// store caches an outcome (c.mu held), within ocspCacheCap entries.
func (c *ocspChecker) store(key string, e ocspEntry) {
	if len(c.cache) >= ocspCacheCap {
		for k, old := range c.cache {
			if e.at.Sub(old.at) >= c.ttl {
				delete(c.cache, k)
			}
		}
		if len(c.cache) >= ocspCacheCap {
			c.cache = map[string]ocspEntry{}
		}
	}
	c.cache[key] = e
}

func (c *ocspChecker) query(cert, issuer *x509.Certificate) ocspResult {
	for _, server := range cert.OCSPServer {
		resp, err := c.ask(server, cert, issuer)
		if err != nil {
			c.log.Warn("pki: OCSP query failed", "server", server, "serial", cert.SerialNumber.String(), "err", err)
			continue
		}
		switch resp.Status {
		case ocsp.Good:
			return ocspGood
		case ocsp.Revoked:
			c.log.Warn("pki: client certificate revoked by OCSP", "server", server, "serial", cert.SerialNumber.String())
			return ocspRevoked
		default:
			c.log.Debug("pki: OCSP status unknown", "server", server, "serial", cert.SerialNumber.String())
		}
	}
	c.log.Warn("pki: no OCSP responder answered: certificate accepted (as CrowdSec does)", "serial", cert.SerialNumber.String(),
		"subject", cert.Subject.String())
	return ocspFailed
}

func (c *ocspChecker) ask(server string, cert, issuer *x509.Certificate) (*ocsp.Response, error) {
	body, err := ocsp.CreateRequest(cert, issuer, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), OCSPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPAnswer+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxOCSPAnswer {
		return nil, errors.New("answer too large")
	}
	return ocsp.ParseResponseForCert(raw, cert, issuer)
}
