package pki

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeCertsAndRevokeNode(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	n2, err := c.a.IssueServer("n2", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	n2b, err := c.a.IssueServer("n2", []string{"127.0.0.1"}) // a renewal
	if err != nil {
		t.Fatal(err)
	}
	n3, err := c.a.IssueServer("n3", nil)
	if err != nil {
		t.Fatal(err)
	}
	// A bouncer named like a node is not a node certificate.
	if _, _, _, err := c.a.IssueClient(RoleBouncer, "n2"); err != nil {
		t.Fatal(err)
	}
	for _, ca := range []*CA{c.a, c.b} { // what one node issued, every node knows
		if !ca.HasNodeCert("n2") || ca.NodeRevoked("n2") || ca.HasNodeCert("nobody") {
			t.Fatalf("HasNodeCert/NodeRevoked before any revocation are wrong")
		}
		if err := ca.VerifyNodePeer("n2", parseChain(t, n2.Certificate)); err != nil {
			t.Fatalf("VerifyNodePeer(n2) with n2's certificate: %v", err)
		}
		if err := ca.VerifyNodePeer("n3", parseChain(t, n2.Certificate)); err == nil || !strings.Contains(err.Error(), "not \"n3\"") {
			t.Fatalf("VerifyNodePeer(n3) with n2's certificate: %v, want a CN mismatch", err)
		}
	}
	serials, err := c.b.RevokeNode(ctx, "n2", "cessationOfOperation")
	if err != nil {
		t.Fatal(err)
	}
	if len(serials) != 2 || !strings.Contains(strings.Join(serials, ","), n2b.Leaf.SerialNumber.String()) {
		t.Fatalf("RevokeNode(n2) revoked %v, want both node certificates and not the bouncer's", serials)
	}
	for _, ci := range c.a.List() {
		if ci.Name == "n2" && ci.Role == RoleBouncer && ci.Revoked {
			t.Fatal("RevokeNode revoked the bouncer certificate named n2")
		}
	}
	for _, ca := range []*CA{c.a, c.b} {
		if ca.HasNodeCert("n2") || !ca.NodeRevoked("n2") || ca.NodeRevoked("n3") || !ca.HasNodeCert("n3") {
			t.Fatalf("after RevokeNode(n2): HasNodeCert/NodeRevoked are wrong")
		}
		if err := ca.VerifyNodePeer("n2", parseChain(t, n2.Certificate)); err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("VerifyNodePeer with a revoked certificate: %v", err)
		}
		if err := ca.VerifyNodePeer("n3", parseChain(t, n3.Certificate)); err != nil {
			t.Fatal(err)
		}
	}
	// A certificate signed with the CA key but never recorded in the FSM
	// (a copy of the key used offline) is refused.
	other := newCluster(t)
	foreign, err := other.a.IssueServer("n3", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.a.VerifyNodePeer("n3", parseChain(t, foreign.Certificate)); err == nil {
		t.Fatal("a certificate from another CA verified")
	}
	// A rejoin (new certificate) makes the node valid again.
	if _, err := c.a.IssueServer("n2", nil); err != nil {
		t.Fatal(err)
	}
	if !c.b.HasNodeCert("n2") || c.b.NodeRevoked("n2") {
		t.Fatal("a node with a fresh certificate after a revocation is not valid")
	}
}

func TestGossipKeyring(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	kr := GossipKeyringIn(c.r.fsms[1])
	if kr.Gen != 0 || len(kr.Primary) != 32 || len(kr.Keys) != 1 {
		t.Fatalf("initial keyring %+v", kr)
	}
	nk, _ := NewGossipKey()
	next := GossipKeyring{Gen: 1, Primary: kr.Primary, Keys: [][]byte{kr.Primary, nk}}
	if err := SetGossipKeyring(ctx, c.r, next); err != nil {
		t.Fatal(err)
	}
	if got := GossipKeyringIn(c.r.fsms[1]); got.Gen != 1 || len(got.Keys) != 2 {
		t.Fatalf("keyring after step 1: %+v", got)
	}
	if err := SetGossipKeyring(ctx, c.r, GossipKeyring{Gen: 2, Primary: nk, Keys: [][]byte{nk}}); err != nil {
		t.Fatal(err)
	}
	if string(GossipKeyIn(c.r.fsms[1])) != string(nk) {
		t.Fatal("the join key does not follow the primary")
	}
	if err := SetGossipKeyring(ctx, c.r, GossipKeyring{Gen: 3, Primary: nk, Keys: [][]byte{kr.Primary}}); err == nil {
		t.Fatal("a primary that is not installed was accepted")
	}
	if err := SetGossipKeyring(ctx, c.r, GossipKeyring{Gen: 3, Primary: []byte("short"), Keys: [][]byte{[]byte("short")}}); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
	// Persisted primary first, 0600; LoadIdentity returns the primary.
	dir := t.TempDir()
	if err := SaveGossipKeys(dir, nk, [][]byte{kr.Primary, nk}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, GossipKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("gossip.key mode: %v %v", fi.Mode(), err)
	}
	id, err := LoadIdentity(dir)
	if err != nil || string(id.GossipKey) != string(nk) {
		t.Fatalf("LoadIdentity primary: %v", err)
	}
}

func parseChain(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}
