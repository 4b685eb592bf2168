package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

func TestBootstrapIdempotent(t *testing.T) {
	r := newReplicas(1)
	ctx := context.Background()
	if err := Bootstrap(ctx, r.fsms[0], r, testOptions()); err != nil {
		t.Fatal(err)
	}
	ca1 := bytes.Clone(r.fsms[0].Config(KeyCA))
	gk := GossipKeyIn(r.fsms[0])
	if len(ca1) == 0 || len(gk) != 32 {
		t.Fatalf("after bootstrap: ca %d bytes, gossip key %d bytes", len(ca1), len(gk))
	}
	idx := r.index
	if err := Bootstrap(ctx, r.fsms[0], r, testOptions()); err != nil {
		t.Fatal(err)
	}
	if r.index != idx {
		t.Errorf("second bootstrap wrote %d commands", r.index-idx)
	}
	if !bytes.Equal(ca1, r.fsms[0].Config(KeyCA)) || !bytes.Equal(gk, GossipKeyIn(r.fsms[0])) {
		t.Error("second bootstrap changed the CA or the gossip key")
	}
	c, err := New(r.fsms[0], r, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Fingerprint()) != 64 {
		t.Errorf("fingerprint %q", c.Fingerprint())
	}
	if !c.Root().IsCA || !c.Intermediate().IsCA || c.Intermediate().CheckSignatureFrom(c.Root()) != nil {
		t.Error("intermediate is not a CA signed by the root")
	}
}

func TestBootstrapGivenGossipKey(t *testing.T) {
	r := newReplicas(1)
	key := bytes.Repeat([]byte{7}, 32)
	if err := Bootstrap(context.Background(), r.fsms[0], r, Options{GossipKey: key}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(GossipKeyIn(r.fsms[0]), key) {
		t.Error("the given gossip key was not stored")
	}
	if err := Bootstrap(context.Background(), newReplicas(1).fsms[0], r, Options{GossipKey: []byte("short")}); err == nil {
		t.Error("a 5-byte gossip key was accepted")
	}
}

// Two nodes bootstrap at the same time: both generate material, both try
// to store it, one wins, both end with the same CA.
func TestBootstrapRace(t *testing.T) {
	r := newReplicas(2)
	barriers := map[string]*sync.WaitGroup{KeyCA: {}, KeyGossipKey: {}}
	for _, wg := range barriers {
		wg.Add(2)
	}
	var mu sync.Mutex
	writes := map[string]int{}
	r.hook = func(c fsm.Command) {
		sc, ok := c.Body.(fsm.SetConfig)
		if !ok {
			return
		}
		if wg := barriers[sc.Key]; wg != nil {
			mu.Lock()
			writes[sc.Key]++
			mu.Unlock()
			wg.Done()
			wg.Wait() // both nodes have decided to write before either does
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Bootstrap(context.Background(), r.fsms[i], r, testOptions())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if writes[KeyCA] != 2 || writes[KeyGossipKey] != 2 {
		t.Fatalf("the race did not happen: writes %v", writes)
	}
	if !bytes.Equal(r.fsms[0].Config(KeyCA), r.fsms[1].Config(KeyCA)) {
		t.Fatal("replicas disagree on the CA")
	}
	a, err := New(r.fsms[0], r, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(r.fsms[1], r, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("two CAs after a bootstrap race")
	}
}

func TestNewBeforeBootstrap(t *testing.T) {
	r := newReplicas(1)
	if _, err := New(r.fsms[0], r, testOptions()); !errors.Is(err, ErrNotBootstrapped) {
		t.Fatalf("New on an empty FSM: %v", err)
	}
	if Ready(r.fsms[0]) {
		t.Error("Ready on an empty FSM")
	}
}

func TestIssueServer(t *testing.T) {
	c := newCluster(t)
	cert, err := c.a.IssueServer("node1", []string{"10.0.0.1", "node1.lan", "lapi.example", "10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if leaf.Subject.CommonName != "node1" || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{DefaultNodeOU}) {
		t.Errorf("subject %v", leaf.Subject)
	}
	if !slices.Contains(leaf.DNSNames, "node1.lan") || !slices.Contains(leaf.DNSNames, "lapi.example") ||
		!slices.Contains(leaf.DNSNames, "node1") {
		t.Errorf("DNS SANs %v", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.1")) {
		t.Errorf("IP SANs %v", leaf.IPAddresses)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("EKU %v", leaf.ExtKeyUsage)
	}
	if len(cert.Certificate) != 2 {
		t.Fatalf("chain of %d certificates, want leaf + intermediate", len(cert.Certificate))
	}
	inter, _ := x509.ParseCertificate(cert.Certificate[1])
	verifyTo(t, c.a, []*x509.Certificate{leaf, inter}, x509.ExtKeyUsageServerAuth)
	if err := leaf.VerifyHostname("10.0.0.1"); err != nil {
		t.Error(err)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < DefaultNodeCertTTL || d > DefaultNodeCertTTL+2*time.Minute {
		t.Errorf("lifetime %v", d)
	}
	// recorded in the FSM, visible on the other node
	list := c.b.List()
	if len(list) != 1 || list[0].Name != "node1" || list[0].Role != RoleNode || list[0].Serial != leaf.SerialNumber.String() {
		t.Errorf("List on the other node: %+v", list)
	}
}

func TestIssueClient(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct {
		role Role
		ou   string
	}{{RoleAgent, DefaultAgentOU}, {RoleBouncer, DefaultBouncerOU}} {
		certPEM, keyPEM, serial, err := c.a.IssueClient(tc.role, "host-"+string(tc.role))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(keyPEM, []byte("PRIVATE KEY")) {
			t.Error("no key PEM")
		}
		chain := parseChainPEM(t, certPEM)
		leaf := chain[0]
		if leaf.SerialNumber.String() != serial {
			t.Errorf("serial %s, returned %s", leaf.SerialNumber, serial)
		}
		if leaf.Subject.CommonName != "host-"+string(tc.role) || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{tc.ou}) {
			t.Errorf("%s: subject %v", tc.role, leaf.Subject)
		}
		if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
			t.Errorf("%s: EKU %v", tc.role, leaf.ExtKeyUsage)
		}
		verifyTo(t, c.a, chain, x509.ExtKeyUsageClientAuth)
		if d := leaf.NotAfter.Sub(leaf.NotBefore); d < DefaultClientCertTTL || d > DefaultClientCertTTL+2*time.Minute {
			t.Errorf("lifetime %v", d)
		}
	}
	if _, _, _, err := c.a.IssueClient(RoleNode, "x"); err == nil {
		t.Error("IssueClient issued a node certificate")
	}
	if _, _, _, err := c.a.IssueClient(RoleAgent, "bad name"); err == nil {
		t.Error("a name with a space was accepted")
	}
	roles := map[Role]int{}
	for _, ci := range c.b.List() {
		roles[ci.Role]++
	}
	if roles[RoleAgent] != 1 || roles[RoleBouncer] != 1 {
		t.Errorf("List roles %v", roles)
	}
}

func TestRevokeVisibleOnOtherNode(t *testing.T) {
	c := newCluster(t)
	_, _, serial, err := c.a.IssueClient(RoleAgent, "agent1")
	if err != nil {
		t.Fatal(err)
	}
	if c.b.IsRevoked(serial) {
		t.Fatal("revoked before Revoke")
	}
	if err := c.a.Revoke(context.Background(), serial, "key-compromise"); err != nil {
		t.Fatal(err)
	}
	if !c.b.IsRevoked(serial) {
		t.Fatal("revocation not visible on the other node right after the apply")
	}
	hex := "0x" + mustBig(t, serial).Text(16)
	if !c.b.IsRevoked(hex) {
		t.Error("hex serial form not accepted")
	}
	if err := c.b.Revoke(context.Background(), serial, ""); !errors.Is(err, ErrAlreadyRevoked) {
		t.Errorf("second revoke: %v", err)
	}
	if err := c.b.Revoke(context.Background(), "12345", ""); !errors.Is(err, ErrUnknownCert) {
		t.Errorf("revoke of an unknown serial: %v", err)
	}
	var found bool
	for _, ci := range c.b.List() {
		if ci.Serial == serial {
			found = ci.Revoked && ci.Reason == "key-compromise" && !ci.RevokedAt.IsZero()
		}
	}
	if !found {
		t.Error("List on the other node does not show the revocation")
	}
	// by name: revokes the live ones only
	_, _, s2, _ := c.a.IssueClient(RoleBouncer, "fw1")
	_, _, s3, _ := c.a.IssueClient(RoleBouncer, "fw1")
	got, err := c.b.RevokeName(context.Background(), "fw1", "")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	want := []string{s2, s3}
	slices.Sort(want)
	if !slices.Equal(got, want) || !c.a.IsRevoked(s2) || !c.a.IsRevoked(s3) {
		t.Errorf("RevokeName revoked %v, want %v", got, want)
	}
}

func mustBig(t *testing.T, s string) *big.Int {
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("bad serial %q", s)
	}
	return n
}

func TestNormalizeSerial(t *testing.T) {
	for in, want := range map[string]string{"255": "255", "0xff": "255", "00:ff": "255", "0XFF": "255", " 10 ": "10"} {
		got, err := NormalizeSerial(in)
		if err != nil || got != want {
			t.Errorf("NormalizeSerial(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "abc", "-1", "0xzz"} {
		if _, err := NormalizeSerial(bad); err == nil {
			t.Errorf("NormalizeSerial(%q) accepted", bad)
		}
	}
}

func TestCRLCombined(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	empty, err := c.b.CRL()
	if err != nil {
		t.Fatal(err)
	}
	rl, err := x509.ParseRevocationList(empty)
	if err != nil {
		t.Fatal(err)
	}
	if len(rl.RevokedCertificateEntries) != 0 {
		t.Fatalf("fresh CRL lists %d entries", len(rl.RevokedCertificateEntries))
	}
	var serials []string
	for _, n := range []string{"a1", "a2", "a3"} {
		_, _, s, err := c.a.IssueClient(RoleAgent, n)
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, s)
	}
	// revoked on both nodes; the CRL of either covers all of them
	if err := c.a.Revoke(ctx, serials[0], "superseded"); err != nil {
		t.Fatal(err)
	}
	if err := c.b.Revoke(ctx, serials[2], ""); err != nil {
		t.Fatal(err)
	}
	for _, node := range []*CA{c.a, c.b} {
		der, err := node.CRL()
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(node.Intermediate()); err != nil {
			t.Fatalf("CRL does not verify against the intermediate: %v", err)
		}
		got := map[string]int{}
		for _, e := range rl.RevokedCertificateEntries {
			got[e.SerialNumber.String()] = e.ReasonCode
		}
		if len(got) != 2 {
			t.Errorf("CRL lists %v", got)
		}
		if code, ok := got[serials[0]]; !ok || code != 4 {
			t.Errorf("serial %s: listed %v, reason %d", serials[0], ok, code)
		}
		if _, ok := got[serials[2]]; !ok {
			t.Errorf("serial %s missing", serials[2])
		}
		if rl.Number == nil || rl.Number.Int64() < time.Now().Unix()-5 {
			t.Errorf("CRL number %v", rl.Number)
		}
		if !rl.NextUpdate.After(time.Now().Add(DefaultCRLValidity - time.Hour)) {
			t.Errorf("nextUpdate %v", rl.NextUpdate)
		}
	}
}

func TestTokenRecordsHoldNoSecretAndArePruned(t *testing.T) {
	c := newCluster(t)
	tok, err := c.a.NewToken("agent1", RoleAgent, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	signWithToken(t, c.a.Handler(), tok, "agent1", 201)
	recs := c.r.fsms[1].ConfigPrefix(prefixToken)
	if len(recs) != 1 {
		t.Fatalf("%d token records", len(recs))
	}
	for k, v := range recs {
		if bytes.Contains(v, []byte(tok)) || bytes.Contains([]byte(k), []byte(tok)) {
			t.Error("the token itself is stored")
		}
		var u usedToken
		if json.Unmarshal(v, &u) != nil || u.Exp == 0 {
			t.Errorf("token record %s", v)
		}
	}
	// not expired yet: kept
	if n, err := c.b.Prune(context.Background(), 0); err != nil || n != 0 {
		t.Fatalf("Prune removed %d (%v)", n, err)
	}
	// make it old
	for k := range recs {
		b, _ := json.Marshal(usedToken{Exp: time.Now().Add(-time.Hour).Unix()})
		if _, err := setConfig(context.Background(), c.r, k, b, false); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.b.Prune(context.Background(), time.Minute); err != nil || n != 1 {
		t.Fatalf("Prune removed %d (%v)", n, err)
	}
	if len(c.r.fsms[0].ConfigPrefix(prefixToken)) != 0 {
		t.Error("expired token record kept")
	}
}
