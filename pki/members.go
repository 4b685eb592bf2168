package pki

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Cluster membership rests on node certificates: a node is a member only
// while it holds a node certificate (CN its node ID, OU NodeOU) that this
// CA issued, recorded in the FSM and did not revoke. Gossip alone never
// makes a voter (see cluster's reconcile), and `halapi cluster remove`
// revokes every certificate of the node and rotates the gossip key.

// certMeta is what membership checks need from a recorded certificate;
// certificates are immutable per serial, so it is cached.
type certMeta struct {
	cn       string
	ous      []string
	notAfter time.Time
}

var certMetaCache sync.Map // serial → certMeta

func recordedMeta(s Store, serial string) (certMeta, bool) {
	if v, ok := certMetaCache.Load(serial); ok {
		return v.(certMeta), true
	}
	raw := s.Config(prefixCert + serial)
	if len(raw) == 0 {
		return certMeta{}, false
	}
	var rec certRecord
	if json.Unmarshal(raw, &rec) != nil {
		return certMeta{}, false
	}
	crt, err := x509.ParseCertificate(rec.DER)
	if err != nil {
		return certMeta{}, false
	}
	m := certMeta{cn: crt.Subject.CommonName, ous: crt.Subject.OrganizationalUnit, notAfter: crt.NotAfter}
	certMetaCache.Store(serial, m)
	return m, true
}

// NodeCertStatus reports, from the FSM, whether nodeID holds at least one
// unexpired, unrevoked node certificate (valid) and whether at least one
// of its node certificates is revoked (revoked). nodeOU "" is NodeOU's
// default. The common case (no node revocation at all) costs one pass
// over the revocations.
func NodeCertStatus(s Store, nodeID, nodeOU string, now time.Time) (valid, revoked bool) {
	return nodeCertStatus(s, nodeID, nodeOU, now, false)
}

// nodeCertStatus is NodeCertStatus; with onlyIfRevoked it skips the scan
// of the certificates (valid stays false) when no revocation names the
// node, which is all the leader's reconcile loop needs twice a second.
func nodeCertStatus(s Store, nodeID, nodeOU string, now time.Time, onlyIfRevoked bool) (valid, revoked bool) {
	if nodeOU == "" {
		nodeOU = DefaultNodeOU
	}
	for k := range s.ConfigPrefix(prefixRevoked) {
		m, ok := recordedMeta(s, strings.TrimPrefix(k, prefixRevoked))
		if ok && m.cn == nodeID && slices.Contains(m.ous, nodeOU) {
			revoked = true
			break
		}
	}
	if onlyIfRevoked && !revoked {
		return false, false
	}
	for k := range s.ConfigPrefix(prefixCert) {
		sn := strings.TrimPrefix(k, prefixCert)
		m, ok := recordedMeta(s, sn)
		if ok && m.cn == nodeID && slices.Contains(m.ous, nodeOU) && now.Before(m.notAfter) && !IsRevokedIn(s, sn) {
			return true, revoked
		}
	}
	return false, revoked
}

// NodeRevoked reports a node that has a revoked node certificate and no
// valid one left: the leader takes such a voter out of raft.
func (c *CA) NodeRevoked(nodeID string) bool {
	valid, revoked := nodeCertStatus(c.store, nodeID, c.opts.NodeOU, time.Now(), true)
	return revoked && !valid
}

// HasNodeCert reports whether nodeID holds a valid node certificate.
func (c *CA) HasNodeCert(nodeID string) bool {
	valid, _ := NodeCertStatus(c.store, nodeID, c.opts.NodeOU, time.Now())
	return valid
}

// RevokeNode revokes every unexpired, unrevoked node certificate issued to
// nodeID (CN nodeID, OU NodeOU; agent and bouncer certificates with the
// same name are left alone) and returns their serials.
func (c *CA) RevokeNode(ctx context.Context, nodeID, reason string) ([]string, error) {
	var done []string
	now := time.Now()
	for _, ci := range c.List() {
		if ci.Name != nodeID || ci.Role != RoleNode || ci.Revoked || now.After(ci.NotAfter) {
			continue
		}
		if err := c.Revoke(ctx, ci.Serial, reason); err != nil && !errors.Is(err, ErrAlreadyRevoked) {
			return done, err
		}
		done = append(done, ci.Serial)
	}
	return done, nil
}

// VerifyNodePeer checks the chain a cluster peer presented before the
// leader makes it a raft voter: the leaf chains to this CA's root, is
// valid now for server auth, carries NodeOU, has CN nodeID, is recorded in
// the FSM with the same bytes (this CA issued it through raft, not some
// holder of a copy of the CA key) and is not revoked.
func (c *CA) VerifyNodePeer(nodeID string, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("the peer presented no certificate")
	}
	leaf := chain[0]
	if err := verifyChain(chain, c.roots, x509.ExtKeyUsageServerAuth); err != nil {
		return fmt.Errorf("peer certificate does not verify: %w", err)
	}
	if !slices.Contains(leaf.Subject.OrganizationalUnit, c.opts.NodeOU) {
		return fmt.Errorf("peer certificate %q is not a node certificate (OU %v)", leaf.Subject.CommonName, leaf.Subject.OrganizationalUnit)
	}
	if leaf.Subject.CommonName != nodeID {
		return fmt.Errorf("peer certificate is for node %q, not %q", leaf.Subject.CommonName, nodeID)
	}
	sn := leaf.SerialNumber.String()
	rec, err := c.db.GetCertificate(sn)
	if err != nil || !rec.Equal(leaf) {
		return fmt.Errorf("peer certificate %s of node %q is not recorded in the cluster state", sn, nodeID)
	}
	if IsRevokedIn(c.store, sn) {
		return fmt.Errorf("peer certificate %s of node %q is revoked", sn, nodeID)
	}
	return nil
}

// KeyGossipKeyring holds the gossip keyring (JSON GossipKeyring) once a
// key has been rotated; before that the keyring is KeyGossipKey alone.
const KeyGossipKeyring = "pki:gossip-keyring"

// GossipKeyring is the replicated gossip keyring: every node installs
// Keys, sends with Primary and removes any other key. Gen grows with each
// change; nodes announce the generation they applied in their gossip
// metadata, which lets a rotation wait for every voter between steps.
type GossipKeyring struct {
	Gen     uint64   `json:"gen"`
	Primary []byte   `json:"primary"`
	Keys    [][]byte `json:"keys"`
}

// GossipKeyringIn returns the keyring in the FSM (generation 0, the
// bootstrap key alone, before the first rotation; zero before Bootstrap).
func GossipKeyringIn(s Store) GossipKeyring {
	var kr GossipKeyring
	if raw := s.Config(KeyGossipKeyring); len(raw) > 0 && json.Unmarshal(raw, &kr) == nil && len(kr.Primary) > 0 {
		return kr
	}
	if k := GossipKeyIn(s); len(k) > 0 {
		return GossipKeyring{Primary: k, Keys: [][]byte{k}}
	}
	return GossipKeyring{}
}

// SetGossipKeyring replicates kr (its Gen must be above the current one);
// KeyGossipKey follows the primary, so join tokens redeemed afterwards
// hand out the key the cluster sends with.
func SetGossipKeyring(ctx context.Context, ap Applier, kr GossipKeyring) error {
	for _, k := range append([][]byte{kr.Primary}, kr.Keys...) {
		switch len(k) {
		case 16, 24, 32:
		default:
			return fmt.Errorf("gossip key must be 16, 24 or 32 bytes, not %d", len(k))
		}
	}
	if !slices.ContainsFunc(kr.Keys, func(k []byte) bool { return string(k) == string(kr.Primary) }) {
		return errors.New("the primary gossip key must be one of the installed keys")
	}
	b, err := json.Marshal(kr)
	if err != nil {
		return err
	}
	if _, err := setConfig(ctx, ap, KeyGossipKeyring, b, false); err != nil {
		return err
	}
	_, err = setConfig(ctx, ap, KeyGossipKey, kr.Primary, false)
	return err
}

// NewGossipKey returns a random 32-byte gossip key.
func NewGossipKey() ([]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return k, err
}
