package pki

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// RuntimeConfig is what a node's PKI runtime is started with (the serve
// flags of the PKI, already checked).
type RuntimeConfig struct {
	NodeID  string
	DataDir string // the node's identity lives in DATA/pki
	// Listen is the API listen address and APINames the extra names of
	// the node certificate (nodeSANs).
	Listen   string
	APINames []string
	// APIAdvertise, if set, is the URL clients use (--api-advertise).
	APIAdvertise string
	// ClusterListen is empty for a node without a cluster port;
	// InsecureCluster runs it in clear (no join tokens, no peer mTLS).
	ClusterListen   string
	InsecureCluster bool
	// JoinToken and JoinAPI: a new node's join token and the member API
	// it redeems it at.
	JoinToken, JoinAPI         string
	NodeCertTTL, ClientCertTTL time.Duration // 0: the CA's defaults
	// PlainHTTP and ExternalCert (--tls-cert) only shape the api-info
	// answer: which scheme and which CA clients use.
	PlainHTTP, ExternalCert bool
	Logger                  *slog.Logger
}

// Runtime is a node's PKI: its identity on disk, the CA once the
// replicated state holds it, the renewer of its certificate and the peer
// TLS wrapper of the cluster port. Prepare builds it before the cluster
// opens, Start makes it live once the node runs.
type Runtime struct {
	cfg  RuntimeConfig
	dir  string
	sans []string
	id   *JoinResult
	pw   *PeerWrap
	log  *slog.Logger

	mu      sync.Mutex
	ca      *CA
	renewer *Renewer
	node    *cluster.Node
	store   *fsm.FSM
	ready   chan struct{}

	// rotateMu serializes the removals started on this node (removal.go).
	rotateMu sync.Mutex
}

// nodeSANs: the shared names first, then the address the API listens on.
func nodeSANs(names []string, listen string) []string {
	out := append([]string{}, names...)
	host, _, _ := net.SplitHostPort(listen)
	ip := net.ParseIP(host)
	switch {
	case host == "" || (ip != nil && ip.IsUnspecified()):
		out = append(out, "localhost", "127.0.0.1")
	case ip != nil && ip.IsLoopback():
		out = append(out, host, "localhost")
	default:
		out = append(out, host)
	}
	return out
}

// secure: a cluster port with TLS, join tokens and a gossip key.
func (rt *Runtime) secure() bool { return rt.cfg.ClusterListen != "" && !rt.cfg.InsecureCluster }

// Prepare loads or obtains the node's identity before the cluster
// starts: a joining node redeems its token, a first node makes a gossip
// key, a removed node's data dir is refused or rejoined (checkRemoved).
func Prepare(ctx context.Context, cfg RuntimeConfig) (*Runtime, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	rt := &Runtime{cfg: cfg, dir: filepath.Join(cfg.DataDir, "pki"), sans: nodeSANs(cfg.APINames, cfg.Listen),
		pw: &PeerWrap{}, log: cfg.Logger, ready: make(chan struct{})}
	var rejoined *JoinResult
	var err error
	if rt.secure() {
		if rejoined, err = rt.checkRemoved(ctx); err != nil {
			return nil, err
		}
	}
	id, err := LoadIdentity(rt.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if id == nil {
		id = &JoinResult{}
	}
	switch {
	case rejoined != nil:
		id = rejoined // a removed node back with a new token (checkRemoved)
	case len(id.CertPEM) > 0:
		// restart: identity on disk
	case cfg.JoinToken != "":
		if cfg.JoinAPI == "" {
			return nil, errors.New("--join-token needs --join-api (the HTTPS API address of a member)")
		}
		jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		res, err := Join(jctx, cfg.JoinAPI, cfg.JoinToken, cfg.NodeID, rt.sans)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		if err := SaveIdentity(rt.dir, res); err != nil {
			return nil, err
		}
		id = res
		rt.log.Info("joined the cluster's PKI: node certificate and gossip key received")
	case rt.secure() && len(id.GossipKey) == 0:
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		id.GossipKey = key
		if err := SaveIdentity(rt.dir, id); err != nil {
			return nil, err
		}
	}
	rt.id = id
	if len(id.CertPEM) > 0 {
		cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("node certificate: %w", err)
		}
		r, err := NewRenewer(RenewerConfig{Initial: &cert, Dir: rt.dir, Logger: rt.log,
			Accept: AcceptNode(cfg.NodeID, rt.sans), Issue: rt.issue})
		if err != nil {
			return nil, err
		}
		rt.renewer = r
	}
	return rt, nil
}

// CheckJoin refuses, before anything is written, a secure node that
// would join others (joining: --join or --bootstrap-expect > 1) with no
// join token, no node certificate and no raft state: it would found a
// second cluster with its own CA. The other side of FirstNode.
func (c RuntimeConfig) CheckJoin(joining bool) error {
	secure := c.ClusterListen != "" && !c.InsecureCluster
	if !secure || c.JoinToken != "" || !joining {
		return nil
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "pki", NodeCertFile)); err == nil || cluster.HasState(c.DataDir) {
		return nil
	}
	return errors.New("--join/--bootstrap-expect on a fresh data dir needs --join-token and --join-api (get a token with `halapi cluster token` on a member); to found a new cluster, start without --join")
}

// FirstNode reports whether this node must found the cluster alone (secure
// mode, no certificate yet, no token): joiners come with tokens.
func (rt *Runtime) FirstNode() bool {
	return rt.secure() && len(rt.id.CertPEM) == 0 && rt.cfg.JoinToken == ""
}

// ClusterTLS fills the cluster config's security settings: peer mTLS on
// the cluster port, the gossip key, the voter rule.
func (rt *Runtime) ClusterTLS(cfg *cluster.Config, store *fsm.FSM) error {
	if rt.cfg.InsecureCluster || cfg.RaftAddr == "" {
		return nil
	}
	cfg.WrapServer, cfg.WrapClient = rt.pw.Server, rt.pw.Client
	rt.pw.Revoked = func(serial string) bool { return IsRevokedIn(store, serial) }
	var refused sync.Once
	rt.pw.OnRefused = func(remote string) {
		refused.Do(func() {
			rt.log.Error("the cluster refuses this node's certificate: it was most likely removed (halapi cluster remove) and its certificate revoked, so it stays out; to bring it back, start it with a new --join-token from `halapi cluster token` on an empty data dir",
				"peer", remote)
		})
	}
	cfg.GossipKey = rt.id.GossipKey
	// The voter rule: a member becomes a voter only once it has shown a
	// valid node certificate for its ID; a voter whose certificates are
	// revoked is removed.
	cfg.VerifyPeer = func(nodeID string, chain []*x509.Certificate) error {
		ca := rt.CA()
		if ca == nil {
			return errors.New("the cluster CA is not loaded on this node yet")
		}
		return ca.VerifyNodePeer(nodeID, chain)
	}
	cfg.NodeRevoked = func(nodeID string) bool {
		ca := rt.CA()
		return ca != nil && ca.NodeRevoked(nodeID)
	}
	if rt.renewer != nil && len(rt.id.CAPEM) > 0 {
		srv, cli, err := PeerTLS(rt.id.CAPEM, DefaultNodeOU, rt.renewer, func(serial string) bool { return IsRevokedIn(store, serial) })
		if err != nil {
			return err
		}
		rt.pw.Set(srv, cli)
	}
	return nil
}

// memberAlive reports whether id is a live member (join refusal).
func (rt *Runtime) memberAlive(id string) bool {
	rt.mu.Lock()
	node := rt.node
	rt.mu.Unlock()
	return node != nil && node.MemberAlive(id)
}

// waitReplicated waits (bounded by ctx) until every reachable member has
// applied what this node has applied: a revocation acknowledged to the
// operator is then enforced by every node, not only by this one.
func (rt *Runtime) waitReplicated(ctx context.Context) {
	rt.mu.Lock()
	node, store := rt.node, rt.store
	rt.mu.Unlock()
	if node == nil {
		return
	}
	_ = node.WaitReplicated(ctx, store.AppliedIndex())
}

// pruneJob (leader job) deletes expired certificates, their revocations
// and used or expired one-time tokens, hourly, once the CA exists here.
func (rt *Runtime) pruneJob(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if ca := rt.CA(); ca != nil {
			n, err := ca.Prune(ctx, 24*time.Hour)
			if err != nil {
				return fmt.Errorf("prune CA records: %w", err)
			}
			if n > 0 {
				rt.log.Info("pruned expired CA records", "records", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (rt *Runtime) issue(context.Context) (tls.Certificate, error) {
	ca := rt.CA()
	if ca == nil {
		return tls.Certificate{}, errors.New("the cluster CA is not available on this node yet")
	}
	return ca.IssueServer(rt.cfg.NodeID, rt.sans)
}

func (rt *Runtime) opts() Options {
	return Options{DNSNames: rt.sans, ClientCertTTL: rt.cfg.ClientCertTTL, NodeCertTTL: rt.cfg.NodeCertTTL,
		GossipKey: rt.id.GossipKey, Logger: rt.log, MemberAlive: rt.memberAlive}
}

// Start binds the runtime to the node, registers the PKI's leader jobs
// (ca-bootstrap: the leader creates the CA once; ca-prune) and runs the
// rest in the background until ctx ends: it builds the local CA from the
// replicated state, obtains this node's certificate if it has none,
// installs the replicated gossip keyring, and keeps the certificate
// renewed.
func (rt *Runtime) Start(ctx context.Context, store *fsm.FSM, node *cluster.Node) {
	rt.mu.Lock()
	rt.node, rt.store = node, store
	rt.mu.Unlock()
	node.AddLeaderJob(cluster.LeaderJob{Name: "ca-bootstrap", MinBackoff: time.Second, MaxBackoff: 15 * time.Second,
		Run: func(jctx context.Context) error {
			bctx, cancel := context.WithTimeout(jctx, 15*time.Second)
			defer cancel()
			return Bootstrap(bctx, store, node, rt.opts())
		}})
	node.AddLeaderJob(cluster.LeaderJob{Name: "ca-prune", MinBackoff: time.Minute, MaxBackoff: time.Hour,
		Run: rt.pruneJob})
	go rt.run(ctx, store, node)
}

func (rt *Runtime) run(ctx context.Context, store *fsm.FSM, node *cluster.Node) {
	for !Ready(store) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	ca, err := New(store, node, rt.opts())
	if err != nil {
		rt.log.Error("cannot load the cluster CA", "err", err)
		return
	}
	if gk := GossipKeyIn(store); len(rt.id.GossipKey) > 0 && string(gk) != string(rt.id.GossipKey) {
		rt.log.Error("this node's gossip key differs from the cluster's: two nodes founded separate clusters")
	}
	rt.mu.Lock()
	rt.ca = ca
	r := rt.renewer
	rt.mu.Unlock()
	for r == nil && ctx.Err() == nil {
		nr, err := ca.NewRenewer(rt.cfg.NodeID, rt.sans, rt.dir)
		if err == nil {
			r = nr
			break
		}
		rt.log.Warn("cannot obtain this node's certificate yet, retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if r == nil {
		return
	}
	rt.mu.Lock()
	rt.renewer = r
	rt.mu.Unlock()
	if !rt.cfg.InsecureCluster {
		srv, cli := ca.PeerTLS(r)
		rt.pw.Set(srv, cli)
	}
	if len(rt.id.CAPEM) == 0 {
		rt.id.CAPEM = ca.RootPEM()
		if err := SaveIdentity(rt.dir, &JoinResult{CAPEM: rt.id.CAPEM}); err != nil {
			rt.log.Warn("cannot save the CA certificate", "err", err)
		}
	}
	close(rt.ready)
	if !rt.cfg.InsecureCluster && len(rt.id.GossipKey) > 0 {
		go rt.applyGossipKeyring(ctx, store, node)
	}
	r.Run(ctx)
}

// WaitCertificate waits, at most max (and not beyond ctx), until this
// node has its certificate (from its identity, or issued by the cluster
// CA once it exists here): HTTPS cannot be served without it.
func (rt *Runtime) WaitCertificate(ctx context.Context, max time.Duration) error {
	if _, err := rt.GetCertificate(nil); err == nil {
		return nil
	}
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-rt.ready:
		return nil
	case <-t.C:
		if _, err := rt.GetCertificate(nil); err == nil {
			return nil
		}
		return fmt.Errorf("no node certificate after %g s: the cluster CA is not reachable (is there a leader?)", max.Seconds())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// JoinPlan is the gossip join list and bootstrap expectation the node
// starts with: a secure node with neither a token nor a certificate
// founds the cluster alone (joiners come with tokens; CheckJoin refused
// the case where --join meant to join), whatever join and expect say.
func (rt *Runtime) JoinPlan(join []string, expect int) ([]string, int) {
	if !rt.FirstNode() {
		return join, expect
	}
	if len(join) > 0 || expect > 1 {
		rt.log.Info("no join token and no node certificate: founding a new cluster; add nodes with `halapi cluster token`")
	}
	return nil, 0
}

// CA is the cluster CA as loaded on this node (nil until Start loaded it).
func (rt *Runtime) CA() *CA {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.ca
}

// GetCertificate serves this node's certificate (tls.Config.GetCertificate).
func (rt *Runtime) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	rt.mu.Lock()
	r := rt.renewer
	rt.mu.Unlock()
	if r == nil {
		return nil, errors.New("no certificate yet")
	}
	return r.GetCertificate(h)
}

// Mount serves the step-ca API and the join endpoint on the API mux
// (503 until the CA is loaded here).
func (rt *Runtime) Mount(m *http.ServeMux) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ca := rt.CA()
		if ca == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"message":"the cluster CA is not ready on this node"}`, http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == JoinPath {
			ca.JoinHandler().ServeHTTP(w, r)
			return
		}
		ca.Handler().ServeHTTP(w, r)
	})
	for _, p := range StepRoutes {
		m.Handle(p, h)
	}
	m.Handle(JoinPath, h)
}
