package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// servedSerial does a TLS handshake with addr and returns the serial of
// the certificate the server presented.
func servedSerial(t *testing.T, ca *CA, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.RootPool(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestRenewerSwapsCertificate(t *testing.T) {
	c := newCluster(t)
	dir := filepath.Join(t.TempDir(), "pki")
	renewed := make(chan tls.Certificate, 1)
	r, err := NewRenewer(RenewerConfig{
		Issue:   func(context.Context) (tls.Certificate, error) { return c.b.IssueServer("node1", []string{"127.0.0.1"}) },
		Dir:     dir,
		OnRenew: func(tc tls.Certificate) { renewed <- tc },
		Logger:  quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	first := <-renewed // the initial issue (nothing in dir)
	// fake clock: Run asks for a timer, the test fires it
	delays := make(chan time.Duration, 1)
	fire := make(chan time.Time)
	r.after = func(d time.Duration) <-chan time.Time { delays <- d; return fire }

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _ = conn.(*tls.Conn).Handshake(); conn.Close() }()
		}
	}()
	if got := servedSerial(t, c.a, ln.Addr().String()); got != first.Leaf.SerialNumber.String() {
		t.Fatalf("served %s, want %s", got, first.Leaf.SerialNumber)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	d := <-delays
	life := first.Leaf.NotAfter.Sub(first.Leaf.NotBefore)
	if want := time.Until(first.Leaf.NotBefore.Add(life * 2 / 3)); d < want-time.Minute || d > want+time.Minute {
		t.Errorf("renewal scheduled in %v, want about %v (2/3 of %v)", d, want, life)
	}
	fire <- time.Now()
	second := <-renewed
	if second.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("renewal returned the same certificate")
	}
	if got := servedSerial(t, c.a, ln.Addr().String()); got != second.Leaf.SerialNumber.String() {
		t.Errorf("after renewal the listener serves %s, want %s", got, second.Leaf.SerialNumber)
	}
	<-delays // Run waits for the next renewal
	cancel()
	<-done

	// persisted: a restarted node loads it instead of issuing
	issued := atomic.Int32{}
	r2, err := NewRenewer(RenewerConfig{
		Issue: func(context.Context) (tls.Certificate, error) {
			issued.Add(1)
			return c.b.IssueServer("node1", []string{"127.0.0.1"})
		},
		Dir: dir, Accept: AcceptNode("node1", []string{"127.0.0.1"}), Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if issued.Load() != 0 || r2.Current().Leaf.SerialNumber.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Errorf("restart: issued %d, serving %s", issued.Load(), r2.Current().Leaf.SerialNumber)
	}
	// SANs changed (new --api-name): the stored certificate is replaced at once
	r3, err := NewRenewer(RenewerConfig{
		Issue: func(context.Context) (tls.Certificate, error) {
			return c.b.IssueServer("node1", []string{"127.0.0.1", "lapi.example"})
		},
		Dir: dir, Accept: AcceptNode("node1", []string{"127.0.0.1", "lapi.example"}), Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r3.Current().Leaf.VerifyHostname("lapi.example"); err != nil {
		t.Errorf("stale certificate kept: %v", err)
	}
}

func TestRenewerRetriesAndCANewRenewer(t *testing.T) {
	c := newCluster(t)
	dir := t.TempDir()
	r, err := c.a.NewRenewer("node1", []string{"10.0.0.1"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	serial := r.Current().Leaf.SerialNumber.String()
	// a revoked node certificate on disk is not reused
	if err := c.b.Revoke(context.Background(), serial, ""); err != nil {
		t.Fatal(err)
	}
	r2, err := c.b.NewRenewer("node1", []string{"10.0.0.1"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if r2.Current().Leaf.SerialNumber.String() == serial {
		t.Error("revoked certificate reused")
	}

	// Issue failing: Run backs off and retries
	var fail atomic.Bool
	fail.Store(true)
	attempts := make(chan error, 4)
	r3, err := NewRenewer(RenewerConfig{
		Initial: r2.Current(),
		Issue: func(context.Context) (tls.Certificate, error) {
			if fail.Load() {
				attempts <- errors.New("not ready")
				return tls.Certificate{}, errors.New("CA not ready")
			}
			attempts <- nil
			return c.a.IssueServer("node1", []string{"10.0.0.1"})
		},
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	delays := make(chan time.Duration, 1)
	fire := make(chan time.Time)
	r3.after = func(d time.Duration) <-chan time.Time { delays <- d; return fire }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r3.Run(ctx)
	<-delays
	r3.Trigger() // renew now
	if err := <-attempts; err == nil {
		t.Fatal("expected a failed attempt")
	}
	if d := <-delays; d != time.Second {
		t.Errorf("first retry in %v, want 1s", d)
	}
	fire <- time.Now()
	<-attempts
	if d := <-delays; d != 2*time.Second {
		t.Errorf("second retry in %v, want 2s", d)
	}
	fail.Store(false)
	fire <- time.Now()
	if err := <-attempts; err != nil {
		t.Fatal(err)
	}
	if d := <-delays; d < time.Hour {
		t.Errorf("after success the next renewal is in %v", d)
	}
	if r3.Current().Leaf.SerialNumber.Cmp(r2.Current().Leaf.SerialNumber) == 0 {
		t.Error("certificate not replaced after the retry succeeded")
	}
}

func TestPeerTLS(t *testing.T) {
	c := newCluster(t)
	r1, err := c.a.NewRenewer("node1", []string{"127.0.0.1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := c.b.NewRenewer("node2", []string{"127.0.0.1"}, "")
	if err != nil {
		t.Fatal(err)
	}
	var w1, w2 PeerWrap
	// before Set: no clear-text fallback
	a, b := net.Pipe()
	if _, err := w1.Client(a).Write([]byte{1}); err == nil {
		t.Error("unconfigured PeerWrap let a connection through")
	}
	b.Close()
	w1.Set(c.a.PeerTLS(r1))
	w2.Set(c.b.PeerTLS(r2))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 8)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				tc := w1.Server(conn)
				buf := make([]byte, 1)
				if _, err := tc.Read(buf); err != nil {
					got <- "error: " + err.Error()
					return
				}
				got <- tc.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName
				_, _ = tc.Write(buf)
			}()
		}
	}()
	dial := func(w *PeerWrap) (net.Conn, error) {
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		tc := w.Client(conn)
		if _, err := tc.Write([]byte{2}); err != nil {
			return nil, err
		}
		return tc, nil
	}
	conn, err := dial(&w2)
	if err != nil {
		t.Fatal(err)
	}
	if peer := <-got; peer != "node2" {
		t.Fatalf("server saw %q", peer)
	}
	buf := make([]byte, 1)
	if _, err := conn.Read(buf); err != nil || buf[0] != 2 {
		t.Fatalf("echo: %v", err)
	}
	conn.Close()

	// an agent certificate is not a node certificate
	agent, _ := clientCert(t, c.a, RoleAgent, "agent-1")
	ra, _ := NewRenewer(RenewerConfig{Initial: &agent})
	var wa PeerWrap
	wa.Set(c.a.PeerTLS(ra))
	if conn, err := dial(&wa); err == nil {
		conn.Read(buf)
		conn.Close()
	}
	if peer := <-got; !strings.HasPrefix(peer, "error:") {
		t.Errorf("agent certificate accepted as a peer: %q", peer)
	}

	// a revoked node is refused by the others at the next handshake
	if err := c.a.Revoke(context.Background(), r2.Current().Leaf.SerialNumber.String(), ""); err != nil {
		t.Fatal(err)
	}
	if conn, err := dial(&w2); err == nil {
		conn.Read(buf)
		conn.Close()
	}
	if peer := <-got; !strings.HasPrefix(peer, "error:") {
		t.Errorf("revoked peer accepted: %q", peer)
	}
	// and a node refuses a server whose certificate is revoked
	if _, err := dial(&w1); err != nil {
		t.Fatalf("node1 to node1: %v", err)
	}
	<-got
	if err := c.b.Revoke(context.Background(), r1.Current().Leaf.SerialNumber.String(), ""); err != nil {
		t.Fatal(err)
	}
	w3 := PeerWrap{}
	r3, _ := c.b.NewRenewer("node3", nil, "")
	w3.Set(c.b.PeerTLS(r3))
	if _, err := dial(&w3); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("dialing a revoked server: %v", err)
	}
	_ = x509.ErrUnsupportedAlgorithm
}
