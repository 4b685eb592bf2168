package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/pki"
	"github.com/spf13/pflag"
)

// pkiFlags are the serve flags of the built-in PKI.
type pkiFlags struct {
	plainHTTP       bool
	plainRemote     bool
	insecureCluster bool
	apiNames        []string
	joinToken       string
	joinTokenFile   string
	joinAPI         string
	agentOUs        []string
	bouncerOUs      []string
	clientCAs       []string
	crl             string
	nodeCertTTL     time.Duration
	clientCertTTL   time.Duration
	clientOCSP      bool
	clientOCSPCache time.Duration
}

func bindPKIFlags(fl *pflag.FlagSet, f *pkiFlags) {
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "serve the LAPI over plain HTTP (only on a loopback --listen, unless --allow-plain-http-remote)")
	fl.BoolVar(&f.insecureCluster, "insecure-cluster", false, "plain TCP and clear-text gossip between nodes, no join tokens (only on loopback cluster addresses; tests)")
	fl.StringArrayVar(&f.apiNames, "api-name", nil, "extra DNS name or IP for this node's certificate, e.g. one name for all nodes (repeatable)")
	fl.StringVar(&f.joinToken, "join-token", "", "join token from `halapi cluster token` (a new node fetches its certificate and the gossip key with it)")
	fl.StringVar(&f.joinTokenFile, "join-token-file", "", "read --join-token from this file (- for stdin), so it does not show in ps")
	fl.StringVar(&f.joinAPI, "join-api", "", "HTTPS API address (host:port) of a member, to redeem --join-token")
	fl.StringSliceVar(&f.agentOUs, "agents-allowed-ou", []string{pki.DefaultAgentOU}, "OUs accepted in agent client certificates")
	fl.StringSliceVar(&f.bouncerOUs, "bouncers-allowed-ou", []string{pki.DefaultBouncerOU}, "OUs accepted in bouncer client certificates")
	fl.StringArrayVar(&f.clientCAs, "client-ca", nil, "PEM bundle of an external CA trusted for client certificates (repeatable)")
	fl.StringVar(&f.crl, "crl", "", "PEM CRL file for the external CAs")
	fl.BoolVar(&f.clientOCSP, "client-ocsp", true, "check client certificates against the OCSP servers they list, as CrowdSec does (no answer: accepted)")
	fl.DurationVar(&f.clientOCSPCache, "client-ocsp-cache", pki.DefaultOCSPCache, "how long an OCSP answer is kept (CrowdSec's tls cache_expiration)")
	fl.DurationVar(&f.nodeCertTTL, "node-cert-ttl", 0, "lifetime of node certificates (default: the pki package's)")
	fl.DurationVar(&f.clientCertTTL, "client-cert-ttl", 0, "lifetime of agent and bouncer certificates")
}

// pkiRuntime is a node's PKI: its identity on disk, the CA once the
// replicated state holds it, the renewer of its certificate and the peer
// TLS wrapper of the cluster port.
type pkiRuntime struct {
	f      pkiFlags
	nodeID string
	dir    string
	sans   []string
	id     *pki.JoinResult
	pw     *pki.PeerWrap
	log    *slog.Logger

	mu      sync.Mutex
	ca      *pki.CA
	renewer *pki.Renewer
	node    *cluster.Node
	store   *fsm.FSM
	ready   chan struct{}
}

// waitReplicated waits (bounded by ctx) until every reachable member has
// applied what this node has applied: a revocation acknowledged to the
// operator is then enforced by every node, not only by this one.
func (rt *pkiRuntime) waitReplicated(ctx context.Context) {
	rt.mu.Lock()
	node, store := rt.node, rt.store
	rt.mu.Unlock()
	if node == nil {
		return
	}
	_ = node.WaitReplicated(ctx, store.AppliedIndex())
}

func isLoopbackHost(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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

// preparePKI loads or obtains the node's identity before the cluster
// starts: a joining node redeems its token, a first node makes a gossip key.
func preparePKI(ctx context.Context, f pkiFlags, nodeID, dataDir, listen, clusterListen string, logger *slog.Logger) (*pkiRuntime, error) {
	if f.plainHTTP && !f.plainRemote && !isLoopbackHost(listen) {
		return nil, fmt.Errorf("--plain-http is only allowed on a loopback --listen address, not %s", listen)
	}
	if f.insecureCluster && clusterListen != "" && !isLoopbackHost(clusterListen) {
		return nil, fmt.Errorf("--insecure-cluster is only allowed on a loopback --cluster-listen address, not %s", clusterListen)
	}
	var err error
	rt := &pkiRuntime{f: f, nodeID: nodeID, dir: filepath.Join(dataDir, "pki"), sans: nodeSANs(f.apiNames, listen),
		pw: &pki.PeerWrap{}, log: logger, ready: make(chan struct{})}
	var rejoined *pki.JoinResult
	if secure := clusterListen != "" && !f.insecureCluster; secure {
		if rejoined, err = rt.checkRemoved(ctx, dataDir); err != nil {
			return nil, err
		}
	}
	id, err := pki.LoadIdentity(rt.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	if id == nil {
		id = &pki.JoinResult{}
	}
	secure := clusterListen != "" && !f.insecureCluster
	switch {
	case rejoined != nil:
		id = rejoined // a removed node back with a new token (checkRemoved)
	case len(id.CertPEM) > 0:
		// restart: identity on disk
	case f.joinToken != "":
		if f.joinAPI == "" {
			return nil, errors.New("--join-token needs --join-api (the HTTPS API address of a member)")
		}
		jctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		res, err := pki.Join(jctx, f.joinAPI, f.joinToken, nodeID, rt.sans)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
		if err := pki.SaveIdentity(rt.dir, res); err != nil {
			return nil, err
		}
		id = res
		logger.Info("joined the cluster's PKI: node certificate and gossip key received")
	case secure && len(id.GossipKey) == 0:
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		id.GossipKey = key
		if err := pki.SaveIdentity(rt.dir, id); err != nil {
			return nil, err
		}
	}
	rt.id = id
	if len(id.CertPEM) > 0 {
		cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("node certificate: %w", err)
		}
		r, err := pki.NewRenewer(pki.RenewerConfig{Initial: &cert, Dir: rt.dir, Logger: logger,
			Accept: pki.AcceptNode(nodeID, rt.sans), Issue: rt.issue})
		if err != nil {
			return nil, err
		}
		rt.renewer = r
	}
	return rt, nil
}

// firstNode reports whether this node must found the cluster alone (secure
// mode, no certificate yet, no token): joiners come with tokens.
func (rt *pkiRuntime) firstNode(clusterListen string) bool {
	return clusterListen != "" && !rt.f.insecureCluster && len(rt.id.CertPEM) == 0 && rt.f.joinToken == ""
}

// clusterTLS fills the cluster config's security settings.
func (rt *pkiRuntime) clusterTLS(cfg *cluster.Config, store *fsm.FSM) error {
	if rt.f.insecureCluster || cfg.RaftAddr == "" {
		return nil
	}
	cfg.WrapServer, cfg.WrapClient = rt.pw.Server, rt.pw.Client
	rt.pw.Revoked = func(serial string) bool { return pki.IsRevokedIn(store, serial) }
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
	// revoked is removed (members.go).
	cfg.VerifyPeer = func(nodeID string, chain []*x509.Certificate) error {
		ca := rt.currentCA()
		if ca == nil {
			return errors.New("the cluster CA is not loaded on this node yet")
		}
		return ca.VerifyNodePeer(nodeID, chain)
	}
	cfg.NodeRevoked = func(nodeID string) bool {
		ca := rt.currentCA()
		return ca != nil && ca.NodeRevoked(nodeID)
	}
	if rt.renewer != nil && len(rt.id.CAPEM) > 0 {
		srv, cli, err := pki.PeerTLS(rt.id.CAPEM, pki.DefaultNodeOU, rt.renewer, func(serial string) bool { return pki.IsRevokedIn(store, serial) })
		if err != nil {
			return err
		}
		rt.pw.Set(srv, cli)
	}
	return nil
}

// memberAlive reports whether id is a live member (join refusal).
func (rt *pkiRuntime) memberAlive(id string) bool {
	rt.mu.Lock()
	node := rt.node
	rt.mu.Unlock()
	return node != nil && node.MemberAlive(id)
}

// pruneJob (leader job) deletes expired certificates, their revocations
// and used or expired one-time tokens, hourly, once the CA exists here.
func (rt *pkiRuntime) pruneJob(ctx context.Context) error {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		rt.mu.Lock()
		ca := rt.ca
		rt.mu.Unlock()
		if ca != nil {
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

func (rt *pkiRuntime) issue(ctx context.Context) (tls.Certificate, error) {
	rt.mu.Lock()
	ca := rt.ca
	rt.mu.Unlock()
	if ca == nil {
		return tls.Certificate{}, errors.New("the cluster CA is not available on this node yet")
	}
	return ca.IssueServer(rt.nodeID, rt.sans)
}

func (rt *pkiRuntime) opts(logger *slog.Logger) pki.Options {
	return pki.Options{DNSNames: rt.sans, ClientCertTTL: rt.f.clientCertTTL, NodeCertTTL: rt.f.nodeCertTTL,
		GossipKey: rt.id.GossipKey, Logger: logger, MemberAlive: rt.memberAlive}
}

// run makes sure the CA exists (the leader creates it once), builds the
// local CA from the replicated state, obtains this node's certificate if it
// has none, and keeps it renewed.
func (rt *pkiRuntime) run(ctx context.Context, store *fsm.FSM, node *cluster.Node) {
	rt.mu.Lock()
	rt.node, rt.store = node, store
	rt.mu.Unlock()
	node.AddLeaderJob(cluster.LeaderJob{Name: "ca-bootstrap", MinBackoff: time.Second, MaxBackoff: 15 * time.Second,
		Run: func(jctx context.Context) error {
			bctx, cancel := context.WithTimeout(jctx, 15*time.Second)
			defer cancel()
			return pki.Bootstrap(bctx, store, node, rt.opts(rt.log))
		}})
	node.AddLeaderJob(cluster.LeaderJob{Name: "ca-prune", MinBackoff: time.Minute, MaxBackoff: time.Hour,
		Run: rt.pruneJob})
	for !pki.Ready(store) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	ca, err := pki.New(store, node, rt.opts(rt.log))
	if err != nil {
		rt.log.Error("cannot load the cluster CA", "err", err)
		return
	}
	if gk := pki.GossipKeyIn(store); len(rt.id.GossipKey) > 0 && string(gk) != string(rt.id.GossipKey) {
		rt.log.Error("this node's gossip key differs from the cluster's: two nodes founded separate clusters")
	}
	rt.mu.Lock()
	rt.ca = ca
	r := rt.renewer
	rt.mu.Unlock()
	for r == nil && ctx.Err() == nil {
		nr, err := ca.NewRenewer(rt.nodeID, rt.sans, rt.dir)
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
	if !rt.f.insecureCluster {
		srv, cli := ca.PeerTLS(r)
		rt.pw.Set(srv, cli)
	}
	if len(rt.id.CAPEM) == 0 {
		rt.id.CAPEM = ca.RootPEM()
		if err := pki.SaveIdentity(rt.dir, &pki.JoinResult{CAPEM: rt.id.CAPEM}); err != nil {
			rt.log.Warn("cannot save the CA certificate", "err", err)
		}
	}
	close(rt.ready)
	if !rt.f.insecureCluster && len(rt.id.GossipKey) > 0 {
		go rt.applyGossipKeyring(ctx, store, node)
	}
	r.Run(ctx)
}

func (rt *pkiRuntime) currentCA() *pki.CA {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.ca
}

func (rt *pkiRuntime) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	rt.mu.Lock()
	r := rt.renewer
	rt.mu.Unlock()
	if r == nil {
		return nil, errors.New("no certificate yet")
	}
	return r.GetCertificate(h)
}

// mount serves the step-ca API and the join endpoint on the API mux
// (503 until the CA is loaded here).
func (rt *pkiRuntime) mount(m *http.ServeMux) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ca := rt.currentCA()
		if ca == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"message":"the cluster CA is not ready on this node"}`, http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == pki.JoinPath {
			ca.JoinHandler().ServeHTTP(w, r)
			return
		}
		ca.Handler().ServeHTTP(w, r)
	})
	for _, p := range pki.StepRoutes {
		m.Handle(p, h)
	}
	m.Handle(pki.JoinPath, h)
}

// certVerifier adapts pki.ClientVerifier to lapi.CertVerifier.
type certVerifier struct{ v *pki.ClientVerifier }

func (c certVerifier) HasCert(cs *tls.ConnectionState) bool { return pki.HasClientCert(cs) }

func (c certVerifier) Verify(cs *tls.ConnectionState, agent bool) (string, error) {
	if agent {
		return c.v.Verify(cs, pki.RoleAgent)
	}
	return c.v.Verify(cs, pki.RoleBouncer)
}

// adminRoutes serves the PKI part of the admin API.
func (rt *pkiRuntime) adminRoutes(r *mux.Router) {
	withCA := func(fn func(ca *pki.CA, w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ca := rt.currentCA()
			if ca == nil {
				writeAdminErr(w, http.StatusServiceUnavailable, "the cluster CA is not ready on this node")
				return
			}
			fn(ca, w, r)
		}
	}
	r.HandleFunc("/pki/join-token", withCA(func(ca *pki.CA, w http.ResponseWriter, r *http.Request) {
		ttl, err := durationParam(r, "ttl", time.Hour)
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, err.Error())
			return
		}
		tok, err := ca.NewJoinToken(r.Context(), ttl)
		if err != nil {
			writeAdminErr(w, http.StatusServiceUnavailable, err.Error())
			return
		}
		writeAdminJSON(w, map[string]string{"token": tok, "fingerprint": ca.Fingerprint(), "expires": time.Now().Add(ttl).UTC().Format(time.RFC3339)})
	})).Methods("POST")
	r.HandleFunc("/pki/token", withCA(func(ca *pki.CA, w http.ResponseWriter, r *http.Request) {
		role, err := pki.ParseRole(r.URL.Query().Get("role"))
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, err.Error())
			return
		}
		ttl, err := durationParam(r, "ttl", 0)
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, err.Error())
			return
		}
		tok, err := ca.NewToken(r.URL.Query().Get("name"), role, ttl)
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, err.Error())
			return
		}
		writeAdminJSON(w, map[string]string{"token": tok, "fingerprint": ca.Fingerprint()})
	})).Methods("POST")
	r.HandleFunc("/pki/issue", withCA(func(ca *pki.CA, w http.ResponseWriter, r *http.Request) {
		role, err := pki.ParseRole(r.URL.Query().Get("role"))
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, err.Error())
			return
		}
		crt, key, serial, err := ca.IssueClient(role, r.URL.Query().Get("name"))
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, err.Error())
			return
		}
		writeAdminJSON(w, map[string]any{"cert": string(crt), "key": string(key), "ca": string(ca.RootPEM()), "serial": serial})
	})).Methods("POST")
	r.HandleFunc("/pki/certs", withCA(func(ca *pki.CA, w http.ResponseWriter, _ *http.Request) {
		writeAdminJSON(w, ca.List())
	})).Methods("GET")
	r.HandleFunc("/pki/revoke", withCA(func(ca *pki.CA, w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		reason := q.Get("reason")
		var serials []string
		var err error
		if name := q.Get("name"); name != "" {
			serials, err = ca.RevokeName(r.Context(), name, reason)
		} else {
			err = ca.Revoke(r.Context(), q.Get("serial"), reason)
			serials = []string{q.Get("serial")}
		}
		if err != nil {
			writeAdminErr(w, http.StatusBadRequest, err.Error())
			return
		}
		wctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		rt.waitReplicated(wctx)
		cancel()
		writeAdminJSON(w, map[string]any{"revoked": serials})
	})).Methods("POST")
}

func durationParam(r *http.Request, name string, def time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid --%s %q", name, v)
	}
	return d, nil
}

func writeAdminJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeAdminErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": strings.TrimSpace(msg)})
}
