package pki

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// JoinPath is where JoinHandler is mounted on every node's API listener.
const JoinPath = "/pki/v1/join"

// ErrJoinRefused is returned (wrapped) for a join token that is malformed,
// for another CA, unknown, expired or already used.
var ErrJoinRefused = errors.New("pki: join token refused")

const (
	fingerprintLen = sha256.Size
	joinSecretLen  = 32
	// DefaultJoinTokenTTL is how long a join token stays redeemable.
	DefaultJoinTokenTTL = time.Hour
)

// joinRecord is what pki:join:<sha256(secret)> holds. The secret itself is
// never stored.
type joinRecord struct {
	Exp int64 `json:"exp"` // unix seconds
}

// ParseJoinToken splits a join token into the CA fingerprint (hex) and the
// one-time secret.
func ParseJoinToken(tok string) (fingerprint string, secret []byte, err error) {
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(tok))
	if err != nil || len(raw) != fingerprintLen+joinSecretLen {
		return "", nil, fmt.Errorf("%w: malformed", ErrJoinRefused)
	}
	return hex.EncodeToString(raw[:fingerprintLen]), raw[fingerprintLen:], nil
}

func joinHash(secret []byte) string {
	sum := sha256.Sum256(secret)
	return hex.EncodeToString(sum[:])
}

// NewJoinToken creates a one-time join token valid for ttl (0: one hour):
// base64url(root fingerprint ‖ 32-byte secret). Only the secret's hash is
// replicated. The token is a secret: print it, never log it.
func (c *CA) NewJoinToken(ctx context.Context, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = DefaultJoinTokenTTL
	}
	secret := make([]byte, joinSecretLen)
	if _, err := rand.Read(secret); err != nil {
		return "", err
	}
	b, err := json.Marshal(joinRecord{Exp: time.Now().Add(ttl).Unix()})
	if err != nil {
		return "", err
	}
	if _, err := setConfig(ctx, c.apply, prefixJoin+joinHash(secret), b, true); err != nil {
		return "", err
	}
	fp, _ := hex.DecodeString(c.fp)
	return base64.RawURLEncoding.EncodeToString(append(fp, secret...)), nil
}

// RedeemJoin spends a join token (exactly once cluster-wide: the claim is
// an IfAbsent write) and returns a node certificate for nodeID with sans
// (chain PEM), its key, the root PEM and the gossip key.
func (c *CA) RedeemJoin(ctx context.Context, token, nodeID string, sans []string) (certPEM, kPEM, caPEM, gossipKey []byte, err error) {
	fp, secret, err := ParseJoinToken(token)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if subtle.ConstantTimeCompare([]byte(fp), []byte(c.fp)) != 1 {
		return nil, nil, nil, nil, fmt.Errorf("%w: issued by another CA", ErrJoinRefused)
	}
	if err := validName(nodeID); err != nil {
		return nil, nil, nil, nil, err
	}
	if c.opts.MemberAlive != nil && c.opts.MemberAlive(nodeID) {
		return nil, nil, nil, nil, fmt.Errorf("%w: node id %q is already a live member of the cluster (choose another --node-id; the token was not spent)", ErrJoinRefused, nodeID)
	}
	h := joinHash(secret)
	raw := c.store.Config(prefixJoin + h)
	var rec joinRecord
	if len(raw) == 0 || json.Unmarshal(raw, &rec) != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w: unknown token", ErrJoinRefused)
	}
	if time.Now().After(time.Unix(rec.Exp, 0)) {
		return nil, nil, nil, nil, fmt.Errorf("%w: expired", ErrJoinRefused)
	}
	used, err := json.Marshal(struct {
		Node string `json:"node"`
	}{nodeID})
	if err != nil {
		return nil, nil, nil, nil, err
	}
	won, err := setConfig(ctx, c.apply, prefixJoinUsed+h, used, true)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if !won {
		return nil, nil, nil, nil, fmt.Errorf("%w: already used", ErrJoinRefused)
	}
	certPEM, kPEM, err = c.issueNodePEM(ctx, nodeID, sans)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	gossipKey = GossipKeyIn(c.store)
	c.log.Info("pki: node joined with a join token", "node", nodeID)
	return certPEM, kPEM, c.RootPEM(), gossipKey, nil
}

type joinRequest struct {
	Token  string   `json:"token"`
	NodeID string   `json:"node_id"`
	SANs   []string `json:"sans,omitempty"`
}

type joinResponse struct {
	Cert      string `json:"cert"`
	Key       string `json:"key"`
	CA        string `json:"ca"`
	GossipKey []byte `json:"gossip_key,omitempty"`
}

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// JoinHandler serves POST JoinPath: a new node trades a join token for its
// node certificate, key, root and gossip key. It needs no other
// authentication; answers carry keys, so serve it over TLS only.
func (c *CA) JoinHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeJSONStatus(w, http.StatusMethodNotAllowed, map[string]string{"message": "method not allowed"})
			return
		}
		var req joinRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
			writeJSONStatus(w, http.StatusBadRequest, map[string]string{"message": "invalid join request"})
			return
		}
		certPEM, kPEM, caPEM, gk, err := c.RedeemJoin(r.Context(), req.Token, req.NodeID, req.SANs)
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, ErrJoinRefused) {
				status = http.StatusForbidden
			} else if validName(req.NodeID) != nil {
				status = http.StatusBadRequest
			}
			c.log.Warn("pki: join refused", "node", req.NodeID, "remote", r.RemoteAddr, "err", err)
			writeJSONStatus(w, status, map[string]string{"message": err.Error()})
			return
		}
		writeJSONStatus(w, http.StatusOK, joinResponse{Cert: string(certPEM), Key: string(kPEM), CA: string(caPEM), GossipKey: gk})
	})
}

// JoinResult is what a joining node gets: its node certificate chain and
// key, the cluster root and the gossip key.
type JoinResult struct {
	CertPEM   []byte
	KeyPEM    []byte
	CAPEM     []byte
	GossipKey []byte
}

// TLSCertificate returns the node certificate as a tls.Certificate.
func (j *JoinResult) TLSCertificate() (tls.Certificate, error) {
	return tls.X509KeyPair(j.CertPEM, j.KeyPEM)
}

func apiBase(addr string) (string, error) {
	if !strings.Contains(addr, "://") {
		addr = "https://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return "", err
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("join address %q: the API must be reached over https", addr)
	}
	return strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"), nil
}

func firstCert(pemBytes []byte) (*x509.Certificate, error) {
	for {
		var b *pem.Block
		b, pemBytes = pem.Decode(pemBytes)
		if b == nil {
			return nil, errors.New("no certificate in PEM")
		}
		if b.Type == "CERTIFICATE" {
			return x509.ParseCertificate(b.Bytes)
		}
	}
}

// pinnedTLS trusts exactly the chains that end at root, whatever name the
// server presents (join addresses are often load-balancer names or raw
// IPs that need not be in the node's SANs).
func pinnedTLS(root *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified in VerifyConnection, pinned to root
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth)
		},
	}
}

func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// Join is the client side of joining: it fetches the root from apiAddr
// (host:port or https URL of any member's API), checks it against the
// fingerprint in the token, then redeems the token over a connection
// pinned to that root. The result is what the node needs before it joins
// raft and gossip.
func Join(ctx context.Context, apiAddr, token, nodeID string, sans []string) (*JoinResult, error) {
	fp, _, err := ParseJoinToken(token)
	if err != nil {
		return nil, err
	}
	base, err := apiBase(apiAddr)
	if err != nil {
		return nil, err
	}
	// 1. The root, over TLS not yet verified: trusted only if its
	// fingerprint is the token's.
	root, err := fetchPinnedRoot(ctx, base, fp)
	if errors.Is(err, errRootUnknown) || errors.Is(err, errRootMismatch) {
		return nil, fmt.Errorf("%w: %v", ErrJoinRefused, err)
	}
	if err != nil {
		return nil, err
	}

	// 2. Redeem over a connection whose chain ends at that root.
	pinned := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pinnedTLS(root)}}
	defer pinned.CloseIdleConnections()
	payload, err := json.Marshal(joinRequest{Token: token, NodeID: nodeID, SANs: sans})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+JoinPath, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := pinned.Do(req)
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", base, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var m struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &m)
		if resp.StatusCode == http.StatusForbidden {
			return nil, fmt.Errorf("%w by %s: %s", ErrJoinRefused, base, m.Message)
		}
		return nil, fmt.Errorf("join %s: HTTP %d: %s", base, resp.StatusCode, m.Message)
	}
	var jr joinResponse
	if err := json.Unmarshal(body, &jr); err != nil {
		return nil, fmt.Errorf("join: %w", err)
	}
	res := &JoinResult{CertPEM: []byte(jr.Cert), KeyPEM: []byte(jr.Key), CAPEM: []byte(jr.CA), GossipKey: jr.GossipKey}
	gotRoot, err := firstCert(res.CAPEM)
	if err != nil || !gotRoot.Equal(root) {
		return nil, errors.New("join: the answer's root is not the pinned root")
	}
	tc, err := res.TLSCertificate()
	if err != nil {
		return nil, fmt.Errorf("join: node certificate: %w", err)
	}
	chain := make([]*x509.Certificate, 0, len(tc.Certificate))
	for _, der := range tc.Certificate {
		crt, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		chain = append(chain, crt)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if err := verifyChain(chain, pool, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, fmt.Errorf("join: node certificate does not verify: %w", err)
	}
	return res, nil
}

// errRootUnknown: the server does not know the CA the token names.
var errRootUnknown = errors.New("the server does not know the token's CA")

// fetchPinnedRoot fetches a CA root over TLS that is not verified yet and
// accepts it only if its SHA-256 fingerprint is fp (from a token). Both
// join and enrollment start this way.
func fetchPinnedRoot(ctx context.Context, base, fp string) (*x509.Certificate, error) {
	insecure := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}, //nolint:gosec // pinned below
	}}
	defer insecure.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/root/"+fp, nil)
	if err != nil {
		return nil, err
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch root from %s: %w", base, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("%w (%s)", errRootUnknown, base)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch root from %s: HTTP %d", base, resp.StatusCode)
	}
	var rr struct {
		CA string `json:"ca"`
	}
	if err := json.Unmarshal(body, &rr); err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	root, err := firstCert([]byte(rr.CA))
	if err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	sum := sha256.Sum256(root.Raw)
	if hex.EncodeToString(sum[:]) != fp {
		return nil, errRootMismatch
	}
	return root, nil
}

// errRootMismatch: the server's root is not the one the token names.
var errRootMismatch = errors.New("the server's root does not match the token's fingerprint")
