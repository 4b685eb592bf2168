package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestJoinTokenRedeemOnce(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	tok, err := c.a.NewJoinToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fp, secret, err := ParseJoinToken(tok)
	if err != nil || fp != c.a.Fingerprint() || len(secret) != 32 {
		t.Fatalf("ParseJoinToken: %q %d %v", fp, len(secret), err)
	}
	// only the hash of the secret is replicated
	for k, v := range c.r.fsms[0].ConfigPrefix("pki:join") {
		if bytes.Contains([]byte(k), secret) || bytes.Contains(v, secret) || bytes.Contains([]byte(k), []byte(tok)) {
			t.Fatal("join secret stored in the FSM")
		}
	}
	srv := apiServer(t, c.b, nil, nil)
	res, err := Join(ctx, srv.URL, tok, "node2", []string{"10.1.2.3", "node2.lan"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.GossipKey, GossipKeyIn(c.r.fsms[0])) || len(res.GossipKey) != 32 {
		t.Error("wrong gossip key")
	}
	if !bytes.Equal(res.CAPEM, c.a.RootPEM()) {
		t.Error("wrong root")
	}
	tc, err := res.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	leaf := tc.Leaf
	if leaf.Subject.CommonName != "node2" || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{DefaultNodeOU}) ||
		!slices.Contains(leaf.DNSNames, "node2.lan") || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.1.2.3")) {
		t.Errorf("node certificate %v %v %v", leaf.Subject, leaf.DNSNames, leaf.IPAddresses)
	}
	inter, _ := x509.ParseCertificate(tc.Certificate[1])
	verifyTo(t, c.a, []*x509.Certificate{leaf, inter}, x509.ExtKeyUsageServerAuth)

	// second time: refused, through either node
	if _, err := Join(ctx, srv.URL, tok, "node3", nil); !errors.Is(err, ErrJoinRefused) {
		t.Fatalf("second join: %v", err)
	}
	if _, _, _, _, err := c.a.RedeemJoin(ctx, tok, "node3", nil); !errors.Is(err, ErrJoinRefused) {
		t.Fatalf("second redeem on the other node: %v", err)
	}

	// identity round trip
	dir := filepath.Join(t.TempDir(), "pki")
	if err := SaveIdentity(dir, res); err != nil {
		t.Fatal(err)
	}
	back, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.CertPEM, res.CertPEM) || !bytes.Equal(back.KeyPEM, res.KeyPEM) ||
		!bytes.Equal(back.CAPEM, res.CAPEM) || !bytes.Equal(back.GossipKey, res.GossipKey) {
		t.Error("identity files do not round-trip")
	}
	if st, _ := os.Stat(filepath.Join(dir, NodeKeyFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode())
	}
	if _, err := LoadIdentity(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadIdentity of an empty dir: %v", err)
	}
}

func TestJoinRefusals(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	srv := apiServer(t, c.a, nil, nil)

	// a token for another CA (other fingerprint)
	other := newCluster(t)
	otherTok, err := other.a.NewJoinToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(ctx, srv.URL, otherTok, "n", nil); !errors.Is(err, ErrJoinRefused) {
		t.Errorf("join with another CA's token: %v", err)
	}
	if _, _, _, _, err := c.a.RedeemJoin(ctx, otherTok, "n", nil); !errors.Is(err, ErrJoinRefused) {
		t.Errorf("redeem of another CA's token: %v", err)
	}

	// our fingerprint, a secret nobody issued
	tok, _ := c.a.NewJoinToken(ctx, time.Hour)
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	raw[len(raw)-1] ^= 1
	forged := base64.RawURLEncoding.EncodeToString(raw)
	if _, err := Join(ctx, srv.URL, forged, "n", nil); !errors.Is(err, ErrJoinRefused) {
		t.Errorf("join with a forged secret: %v", err)
	}
	// the right secret with a wrong fingerprint: the client refuses the CA
	raw, _ = base64.RawURLEncoding.DecodeString(tok)
	raw[0] ^= 1
	if _, err := Join(ctx, srv.URL, base64.RawURLEncoding.EncodeToString(raw), "n", nil); !errors.Is(err, ErrJoinRefused) {
		t.Errorf("join with a wrong fingerprint: %v", err)
	}
	// the genuine token still works after all that
	if _, err := Join(ctx, srv.URL, tok, "n", nil); err != nil {
		t.Errorf("genuine token after failed attempts: %v", err)
	}

	// expired
	tok2, _ := c.a.NewJoinToken(ctx, time.Hour)
	_, secret, _ := ParseJoinToken(tok2)
	b, _ := json.Marshal(joinRecord{Exp: time.Now().Add(-time.Second).Unix()})
	if _, err := setConfig(ctx, c.r, prefixJoin+joinHash(secret), b, false); err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, err := c.b.RedeemJoin(ctx, tok2, "n", nil); !errors.Is(err, ErrJoinRefused) {
		t.Errorf("expired token: %v", err)
	}
	if _, _, err := ParseJoinToken("not-a-token"); !errors.Is(err, ErrJoinRefused) {
		t.Errorf("malformed token: %v", err)
	}
	// pruned once expired
	if n, err := c.a.Prune(ctx, 0); err != nil || n < 1 {
		t.Errorf("Prune: %d %v", n, err)
	}
	if len(c.r.fsms[1].Config(prefixJoin+joinHash(secret))) != 0 {
		t.Error("expired join record kept")
	}
}

// The join client pins the CA: a server presenting a chain from another
// CA is refused even if it answers /root/{fp} with the right root.
func TestJoinPinsServerChain(t *testing.T) {
	good := newCluster(t)
	evil := newCluster(t)
	// evil serves good's root at /root/{fp} but its own TLS chain
	cert, err := evil.a.IssueServer("node1", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/root/", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"ca": string(good.a.RootPEM())})
	})
	mux.Handle(JoinPath, good.a.JoinHandler())
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	defer srv.Close()
	tok, _ := good.a.NewJoinToken(context.Background(), time.Hour)
	if _, err := Join(context.Background(), srv.URL, tok, "n", nil); err == nil {
		t.Fatal("join trusted a server outside the pinned CA")
	}
	// and the token was not spent
	if _, _, _, _, err := good.b.RedeemJoin(context.Background(), tok, "n", nil); err != nil {
		t.Fatalf("token spent by a refused connection: %v", err)
	}
}
