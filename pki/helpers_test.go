package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// replicas is a fake raft: every command is encoded once and applied, with
// increasing indexes, to every FSM, as each node of a cluster would.
type replicas struct {
	mu    sync.Mutex
	fsms  []*fsm.FSM
	index uint64
	// hook, if set, runs before a command is applied (outside the lock).
	hook func(c fsm.Command)
}

func newReplicas(n int) *replicas {
	r := &replicas{}
	for range n {
		r.fsms = append(r.fsms, fsm.New(nil))
	}
	return r
}

func (r *replicas) Apply(_ context.Context, c fsm.Command) (*fsm.Result, error) {
	if r.hook != nil {
		r.hook(c)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c.Time = time.Now().UnixNano()
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	r.index++
	var first *fsm.Result
	for i, f := range r.fsms {
		res := f.Apply(&raft.Log{Index: r.index, Type: raft.LogCommand, Data: data}).(*fsm.Result)
		if i == 0 {
			first = res
		}
	}
	return first, nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testOptions() Options {
	return Options{DNSNames: []string{"lapi.example", "127.0.0.1"}, Logger: quietLogger()}
}

// twoNodes is two nodes sharing one fake raft.
type twoNodes struct {
	r    *replicas
	a, b *CA
}

func newCluster(t *testing.T) *twoNodes {
	t.Helper()
	r := newReplicas(2)
	if err := Bootstrap(context.Background(), r.fsms[0], r, testOptions()); err != nil {
		t.Fatal(err)
	}
	a, err := New(r.fsms[0], r, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(r.fsms[1], r, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return &twoNodes{r: r, a: a, b: b}
}

func parseChainPEM(t *testing.T, b []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatal("no certificate in PEM")
	}
	return out
}

func verifyTo(t *testing.T, ca *CA, chain []*x509.Certificate, usage x509.ExtKeyUsage) {
	t.Helper()
	if err := verifyChain(chain, ca.RootPool(), usage); err != nil {
		t.Fatalf("chain does not verify to the root: %v", err)
	}
}

// apiServer serves a node's API the way the lead will mount it: the step
// routes, the join endpoint, an echo of the client-cert identity, over TLS
// with the node certificate and client certificates requested.
func apiServer(t *testing.T, ca *CA, v *ClientVerifier, extra http.Handler) *httptest.Server {
	t.Helper()
	cert, err := ca.IssueServer("node1", []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, p := range StepRoutes {
		mux.Handle(p, ca.Handler())
	}
	mux.Handle(JoinPath, ca.JoinHandler())
	if extra != nil {
		mux.Handle("/whoami/", extra)
	}
	srv := httptest.NewUnstartedServer(mux)
	base := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if v != nil {
		srv.TLS = v.ServerTLS(base)
	} else {
		srv.TLS = base
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func tlsClient(ca *CA, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: ca.RootPool()}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}
