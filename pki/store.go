package pki

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/smallstep/certificates/db"
	"github.com/smallstep/nosql/database"
	"golang.org/x/crypto/ssh"
)

// Store is the read side of the replicated state; *fsm.FSM satisfies it.
// Values returned must be treated as read-only.
type Store interface {
	Config(key string) []byte
	ConfigPrefix(prefix string) map[string][]byte
}

// Applier submits one command through raft and returns once it is applied
// locally; *cluster.Node satisfies it.
type Applier interface {
	Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error)
}

// Keys of the PKI state in the FSM's replicated config map.
const (
	// KeyCA holds the root and intermediate certificates and keys and the
	// provisioner key (JSON, see material).
	KeyCA = "pki:ca"
	// KeyGossipKey holds the memberlist encryption key (32 raw bytes).
	KeyGossipKey = "pki:gossip-key"

	prefixCert     = "pki:cert:"      // + decimal serial → certRecord
	prefixRevoked  = "pki:revoked:"   // + decimal serial → revokedRecord
	prefixToken    = "pki:token:"     // + token id → usedToken (claimed once)
	prefixJoin     = "pki:join:"      // + sha256(secret) → joinRecord
	prefixJoinUsed = "pki:join-used:" // + sha256(secret) → claimed once
)

// setConfig writes one key through raft. With ifAbsent the write is a
// first-writer-wins claim and the boolean tells whether this call won it.
// An empty value deletes the key.
func setConfig(ctx context.Context, ap Applier, key string, value []byte, ifAbsent bool) (bool, error) {
	res, err := ap.Apply(ctx, fsm.Command{Type: fsm.CmdSetConfig, Body: fsm.SetConfig{Key: key, Value: value, IfAbsent: ifAbsent}})
	if err != nil {
		return false, err
	}
	if res == nil {
		return false, errors.New("pki: empty apply result")
	}
	if res.Err() != nil {
		return false, res.Err()
	}
	return res.N == 1, nil
}

// certRecord is what pki:cert:<serial> holds.
type certRecord struct {
	DER []byte `json:"der"`
}

// revokedRecord is what pki:revoked:<serial> holds.
type revokedRecord struct {
	Serial        string    `json:"serial"`
	ProvisionerID string    `json:"provisioner_id,omitempty"`
	ReasonCode    int       `json:"reason_code,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	RevokedAt     time.Time `json:"revoked_at"`
	ExpiresAt     time.Time `json:"expires_at,omitzero"`
	TokenID       string    `json:"token_id,omitempty"`
	MTLS          bool      `json:"mtls,omitempty"`
}

// usedToken is what pki:token:<id> holds; Exp lets Prune drop it once the
// token could not be replayed anyway.
type usedToken struct {
	Exp int64 `json:"exp,omitempty"` // unix seconds
}

// NormalizeSerial accepts a serial number as decimal, as hex with a 0x
// prefix, or as colon-separated hex (what openssl and step print) and
// returns its decimal form, the one used in keys and in step's API.
func NormalizeSerial(s string) (string, error) {
	s = strings.TrimSpace(s)
	n := new(big.Int)
	var ok bool
	switch {
	case strings.Contains(s, ":"):
		_, ok = n.SetString(strings.ReplaceAll(s, ":", ""), 16)
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		_, ok = n.SetString(s[2:], 16)
	default:
		_, ok = n.SetString(s, 10)
	}
	if !ok || n.Sign() < 0 {
		return "", fmt.Errorf("invalid serial number %q", s)
	}
	return n.String(), nil
}

// tokenKey bounds the length of a token id used in a key.
func tokenKey(id string) string {
	if len(id) > 128 || strings.ContainsAny(id, " \t\r\n") {
		sum := sha256.Sum256([]byte(id))
		id = hex.EncodeToString(sum[:])
	}
	return prefixToken + id
}

// IsRevokedIn reports whether the FSM holds a revocation for serial
// (decimal). It is an O(1) lookup, cheap enough for every handshake.
func IsRevokedIn(s Store, serial string) bool {
	return len(s.Config(prefixRevoked+serial)) > 0
}

// GossipKeyIn returns the cluster's gossip key from the FSM (nil before
// Bootstrap).
func GossipKeyIn(s Store) []byte {
	return append([]byte(nil), s.Config(KeyGossipKey)...)
}

// Ready reports whether the FSM holds the CA (New can succeed).
func Ready(s Store) bool { return len(s.Config(KeyCA)) > 0 }

// authDB is step's db.AuthDB (plus CertificateStorer and
// CertificateRevocationListDB) on the FSM: reads come from the local
// replica, writes go through raft. The CRL itself is derived data: each
// node keeps the last one it generated in memory.
type authDB struct {
	store   Store
	apply   Applier
	timeout time.Duration
	now     func() time.Time

	mu         sync.Mutex
	crl        *db.CertificateRevocationListInfo
	crlVersion string // revocation set the cached CRL was built from
	listed     string // revocation set returned by the last GetRevokedCertificates
}

var (
	_ db.AuthDB                      = (*authDB)(nil)
	_ db.CertificateStorer           = (*authDB)(nil)
	_ db.CertificateRevocationListDB = (*authDB)(nil)
)

func (d *authDB) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d.timeout)
}

// IsRevoked implements db.AuthDB.
func (d *authDB) IsRevoked(sn string) (bool, error) {
	return IsRevokedIn(d.store, sn), nil
}

// IsSSHRevoked implements db.AuthDB; halapi's CA does not sign SSH
// certificates.
func (d *authDB) IsSSHRevoked(string) (bool, error) { return false, nil }

// Revoke implements db.AuthDB: a first-writer-wins claim of
// pki:revoked:<serial>, so a second revocation reports ErrAlreadyExists.
func (d *authDB) Revoke(rci *db.RevokedCertificateInfo) error {
	if rci == nil || rci.Serial == "" {
		return errors.New("pki: revocation without serial")
	}
	serial, err := NormalizeSerial(rci.Serial)
	if err != nil {
		return err
	}
	rec := revokedRecord{
		Serial: serial, ProvisionerID: rci.ProvisionerID, ReasonCode: rci.ReasonCode, Reason: rci.Reason,
		RevokedAt: rci.RevokedAt.UTC(), ExpiresAt: rci.ExpiresAt.UTC(), TokenID: rci.TokenID, MTLS: rci.MTLS,
	}
	if rec.RevokedAt.IsZero() {
		rec.RevokedAt = d.now().UTC()
	}
	if rec.ExpiresAt.IsZero() {
		if crt, err := d.GetCertificate(serial); err == nil {
			rec.ExpiresAt = crt.NotAfter.UTC()
		}
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	won, err := setConfig(ctx, d.apply, prefixRevoked+serial, b, true)
	if err != nil {
		return err
	}
	if !won {
		return db.ErrAlreadyExists
	}
	return nil
}

// RevokeSSH implements db.AuthDB.
func (d *authDB) RevokeSSH(*db.RevokedCertificateInfo) error { return db.ErrNotImplemented }

// GetCertificate implements db.AuthDB.
func (d *authDB) GetCertificate(serialNumber string) (*x509.Certificate, error) {
	raw := d.store.Config(prefixCert + serialNumber)
	if len(raw) == 0 {
		return nil, database.ErrNotFound
	}
	var rec certRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, err
	}
	return x509.ParseCertificate(rec.DER)
}

// UseToken implements db.AuthDB: the token id is claimed cluster-wide with
// IfAbsent, so a one-time token works on exactly one node, once. Only the
// id (the jti) and the expiry are stored, never the token.
func (d *authDB) UseToken(id, tok string) (bool, error) {
	var rec usedToken
	if exp := unverifiedExpiry(tok); !exp.IsZero() {
		rec.Exp = exp.Unix()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	return setConfig(ctx, d.apply, tokenKey(id), b, true)
}

// IsSSHHost implements db.AuthDB.
func (d *authDB) IsSSHHost(string) (bool, error) { return false, nil }

// GetSSHHostPrincipals implements db.AuthDB.
func (d *authDB) GetSSHHostPrincipals() ([]string, error) { return nil, nil }

// Shutdown implements db.AuthDB; the FSM is not ours to close.
func (d *authDB) Shutdown() error { return nil }

// StoreCertificate implements db.CertificateStorer: every certificate the
// authority signs is recorded (for List, revocation by name, CRL expiry).
func (d *authDB) StoreCertificate(crt *x509.Certificate) error {
	b, err := json.Marshal(certRecord{DER: crt.Raw})
	if err != nil {
		return err
	}
	ctx, cancel := d.ctx()
	defer cancel()
	_, err = setConfig(ctx, d.apply, prefixCert+crt.SerialNumber.String(), b, false)
	return err
}

// StoreSSHCertificate implements db.CertificateStorer.
func (d *authDB) StoreSSHCertificate(*ssh.Certificate) error { return db.ErrNotImplemented }

// revocations returns every revocation record, sorted by serial, and a
// digest of the set.
func (d *authDB) revocations() ([]revokedRecord, string) {
	m := d.store.ConfigPrefix(prefixRevoked)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	out := make([]revokedRecord, 0, len(keys))
	for _, k := range keys {
		var r revokedRecord
		if err := json.Unmarshal(m[k], &r); err != nil || r.Serial == "" {
			r = revokedRecord{Serial: strings.TrimPrefix(k, prefixRevoked)}
		}
		out = append(out, r)
		h.Write([]byte(k))
		h.Write([]byte{0})
	}
	return out, hex.EncodeToString(h.Sum(nil))
}

// GetRevokedCertificates implements db.CertificateRevocationListDB.
func (d *authDB) GetRevokedCertificates() (*[]db.RevokedCertificateInfo, error) {
	recs, version := d.revocations()
	out := make([]db.RevokedCertificateInfo, 0, len(recs))
	for _, r := range recs {
		out = append(out, db.RevokedCertificateInfo{
			Serial: r.Serial, ProvisionerID: r.ProvisionerID, ReasonCode: r.ReasonCode, Reason: r.Reason,
			RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt, TokenID: r.TokenID, MTLS: r.MTLS,
		})
	}
	d.mu.Lock()
	d.listed = version
	d.mu.Unlock()
	return &out, nil
}

// GetCRL implements db.CertificateRevocationListDB. Every node generates
// its own CRL, so the number step derives from the previous one is seeded
// from the clock: a node's next CRL number is at least the current Unix
// time, which keeps numbers growing across nodes whose clocks agree.
func (d *authDB) GetCRL() (*db.CertificateRevocationListInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	floor := d.now().Unix() - 1
	if d.crl == nil {
		return &db.CertificateRevocationListInfo{Number: floor}, nil
	}
	c := *d.crl
	if c.Number < floor {
		c.Number = floor
	}
	return &c, nil
}

// StoreCRL implements db.CertificateRevocationListDB: the CRL is derived
// from the FSM, so it is cached in memory and never replicated.
func (d *authDB) StoreCRL(info *db.CertificateRevocationListInfo) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := *info
	d.crl = &c
	d.crlVersion = d.listed
	return nil
}

// cachedCRL returns the cached CRL and the revocation set it covers.
func (d *authDB) cachedCRL() (*db.CertificateRevocationListInfo, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.crl, d.crlVersion
}
