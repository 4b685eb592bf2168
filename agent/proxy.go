package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// IdempotencyHeader is the header the agent puts on every write; the
// nodes (lapi) turn it into the raft request ID, bound to the client's
// identity, so a write retried on another node is applied once.
const IdempotencyHeader = "Idempotency-Key"

// MembersPath is the nodes' membership route (lapi.MembersPath).
const MembersPath = "/halapi/v1/members"

// maxNodes bounds how many nodes the agent tracks (the member list is
// input from the network).
const maxNodes = 64

// Config configures an Agent. Zero durations take the defaults below.
type Config struct {
	// Servers are the API URLs the agent starts from (at least one).
	Servers []string
	// TLS verifies HTTPS nodes (RootCAs: the cluster CA). It must not
	// hold a client certificate: requests that carry an API key or a
	// token are passed through without one (a certificate would replace
	// their credential on the node).
	TLS *tls.Config
	// Identity is the host's enrolled client certificate: used for the
	// members route and for local clients that present this same
	// certificate to the agent's TLS listener (see Handler).
	Identity *tls.Certificate
	// IdentityFiles, instead of Identity, loads the identity from disk,
	// reloads it when the files change and renews it before it expires.
	IdentityFiles *IdentityFiles
	// APIKey (a bouncer key) authenticates the members route when there
	// is no Identity. Without either, the agent keeps to Servers.
	APIKey string

	HealthEvery    time.Duration // default 250ms
	HealthTimeout  time.Duration // default 600ms
	MembersEvery   time.Duration // default 10s
	RequestTimeout time.Duration // default 60s: one client request, every attempt
	HedgeAfter     time.Duration // default 1s: a hedgeable request also goes to the next node
	RetryFor       time.Duration // default 20s: rounds over the nodes while they answer 502/503/504
	MaxBody        int64         // default 64 MiB (the nodes' own bound)
	IdentityEvery  time.Duration // default 30s: identity files checked, renewal due?
	Logger         *slog.Logger
}

func (c *Config) defaults() {
	if c.HealthEvery <= 0 {
		c.HealthEvery = 250 * time.Millisecond
	}
	if c.HealthTimeout <= 0 {
		c.HealthTimeout = 600 * time.Millisecond
	}
	if c.MembersEvery <= 0 {
		c.MembersEvery = 10 * time.Second
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = 60 * time.Second
	}
	if c.RetryFor <= 0 {
		c.RetryFor = 20 * time.Second
	}
	if c.HedgeAfter <= 0 {
		c.HedgeAfter = time.Second
	}
	if c.IdentityEvery <= 0 {
		c.IdentityEvery = 30 * time.Second
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// node is one halapi node as the agent sees it.
type node struct {
	key    string // scheme://host:port, the metrics label
	base   *url.URL
	static bool // from --server: never forgotten
	tr     *http.Transport
	idTr   *http.Transport // nil without an identity
	// relay, idRelay: the hot path's connections (relay.go)
	relay, idRelay *connPool

	id       atomic.Pointer[string] // node ID from the member list
	healthy  atomic.Bool
	rtt      atomic.Int64 // EWMA of /health round trips, ns
	requests atomic.Int64
	errors   atomic.Int64
	retries  atomic.Int64
	lastErr  atomic.Pointer[string]
	since    atomic.Int64 // unix ns of the last health change

	mu   sync.Mutex
	down context.Context // cancelled when the node is marked down
	kill context.CancelFunc

	stop context.CancelFunc // ends its health loop
}

func (n *node) downCtx() context.Context {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.down
}

// Agent is the local failover proxy in front of a halapi cluster.
type Agent struct {
	cfg Config
	log *slog.Logger
	met *metrics

	mu        sync.RWMutex
	nodes     map[string]*node
	preferred *node
	failovers atomic.Int64
	retries   atomic.Int64
	// memberRefreshes counts member lists applied (tests wait on it).
	memberRefreshes atomic.Int64

	recent recentLog
	// ident is the certificate presented upstream for identity requests;
	// identitySPKI its public key (fixed: renewals keep the key).
	ident            atomic.Pointer[tls.Certificate]
	identitySPKI     []byte
	identMod         time.Time // identityLoop only
	identityRenewals atomic.Int64

	ctx    context.Context
	cancel context.CancelFunc
}

// New builds an agent; Run starts its health checks and member refresh.
func New(cfg Config) (*Agent, error) {
	cfg.defaults()
	if len(cfg.Servers) == 0 {
		return nil, errors.New("at least one --server URL is needed")
	}
	if cfg.TLS != nil && (len(cfg.TLS.Certificates) > 0 || cfg.TLS.GetClientCertificate != nil) {
		return nil, errors.New("agent: the passthrough TLS config must not carry a client certificate (use Identity)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{cfg: cfg, log: cfg.Logger, met: newMetrics(), nodes: map[string]*node{}, ctx: ctx, cancel: cancel}
	if f := cfg.IdentityFiles; f != nil {
		c, mod, err := loadIdentity(f)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("agent: identity certificate: %w", err)
		}
		cfg.Identity, a.identMod = c, mod
		a.cfg.Identity = c
	}
	if id := cfg.Identity; id != nil {
		if len(id.Certificate) == 0 {
			cancel()
			return nil, errors.New("agent: identity without a certificate")
		}
		leaf, err := x509.ParseCertificate(id.Certificate[0])
		if err != nil {
			cancel()
			return nil, fmt.Errorf("agent: identity certificate: %w", err)
		}
		a.identitySPKI = leaf.RawSubjectPublicKeyInfo
		a.ident.Store(id)
	}
	for _, s := range cfg.Servers {
		u, err := parseNodeURL(s)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("--server %q: %w", s, err)
		}
		a.addNode(u, true)
	}
	return a, nil
}

// parseNodeURL accepts http(s)://host:port[/] and returns scheme://host:port.
func parseNodeURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("scheme must be http or https")
	}
	if u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("want scheme://host:port/ and nothing else")
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil, errors.New("unspecified address (0.0.0.0 or ::): give the node's reachable address")
	}
	if host == "" {
		return nil, errors.New("no host")
	}
	if net.ParseIP(host) == nil && !validDNSName(host) {
		return nil, fmt.Errorf("invalid host %q", host)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return nil, fmt.Errorf("invalid port %q", port)
	}
	return &url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(host, port)}, nil
}

// validDNSName: letters, digits, '-' and '.', labels of 1–63 characters
// that neither start nor end with '-', at most 253 characters.
func validDNSName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

func (a *Agent) transport(identity bool) *http.Transport {
	d := &net.Dialer{Timeout: time.Second, KeepAlive: 15 * time.Second}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   2 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		ExpectContinueTimeout: time.Second,
		// The answer's encoding is the client's business: pass it through.
		DisableCompression: true,
	}
	var tc *tls.Config
	if a.cfg.TLS != nil {
		tc = a.cfg.TLS.Clone()
	} else {
		tc = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if identity {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.identity(), nil }
	}
	tr.TLSClientConfig = tc
	return tr
}

// addNode registers u (no-op if known or at the bound); callers hold no lock.
func (a *Agent) addNode(u *url.URL, static bool) *node {
	key := u.Scheme + "://" + u.Host
	a.mu.Lock()
	defer a.mu.Unlock()
	if n, ok := a.nodes[key]; ok {
		if static {
			n.static = true
		}
		return n
	}
	if len(a.nodes) >= maxNodes {
		return nil
	}
	n := &node{key: key, base: u, static: static, tr: a.transport(false)}
	n.relay = a.relayPool(n, false)
	if a.cfg.Identity != nil {
		n.idTr = a.transport(true)
		n.idRelay = a.relayPool(n, true)
	}
	n.down, n.kill = context.WithCancel(context.Background())
	n.kill() // unknown until the first health check succeeds
	n.since.Store(time.Now().UnixNano())
	a.nodes[key] = n
	a.met.nodeKnown(n)
	return n
}

func (a *Agent) removeNode(n *node) {
	a.mu.Lock()
	delete(a.nodes, n.key)
	if a.preferred == n {
		a.preferred = nil
	}
	a.mu.Unlock()
	if n.stop != nil {
		n.stop()
	}
	n.tr.CloseIdleConnections()
	n.relay.closeIdle(true)
	if n.idTr != nil {
		n.idTr.CloseIdleConnections()
		n.idRelay.closeIdle(true)
	}
	a.met.nodeGone(n)
	a.log.Info("node left the member list", "node", n.key)
}

// Run checks every node's health and refreshes the member list until ctx
// ends. Call it once.
func (a *Agent) Run(ctx context.Context) {
	defer a.cancel()
	a.mu.RLock()
	for _, n := range a.nodes {
		a.startHealth(n)
	}
	a.mu.RUnlock()
	if a.cfg.IdentityFiles != nil {
		go a.identityLoop(ctx)
	}
	// The first member list as soon as a node answers, then every
	// MembersEvery: an agent that knows one node only until its first
	// refresh would have nowhere to go if that node died meanwhile.
	for !a.refreshMembers(ctx) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(250 * time.Millisecond):
		}
	}
	t := time.NewTicker(a.cfg.MembersEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.mu.RLock()
			for _, n := range a.nodes {
				if n.stop != nil {
					n.stop()
				}
			}
			a.mu.RUnlock()
			return
		case <-t.C:
			a.refreshMembers(ctx)
		}
	}
}

func (a *Agent) startHealth(n *node) {
	if n.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(a.ctx)
	n.stop = cancel
	go a.healthLoop(ctx, n)
}

func (a *Agent) healthLoop(ctx context.Context, n *node) {
	t := time.NewTicker(a.cfg.HealthEvery)
	defer t.Stop()
	for {
		a.checkHealth(ctx, n)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (a *Agent) checkHealth(ctx context.Context, n *node) {
	hctx, cancel := context.WithTimeout(ctx, a.cfg.HealthTimeout)
	defer cancel()
	start := time.Now()
	err := a.healthOnce(hctx, n)
	if err != nil && ctx.Err() == nil && hctx.Err() == nil && !isTimeout(err) {
		// A connection the node closed under the check (its idle
		// timeout, a restart of its connections) is no sign of a down
		// node: one more try, on a new connection, within the same
		// timeout. A refused or hung node fails it as fast.
		n.tr.CloseIdleConnections()
		err = a.healthOnce(hctx, n)
	}
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		a.markDown(n, err)
		return
	}
	d := time.Since(start).Nanoseconds()
	if old := n.rtt.Load(); old > 0 {
		d = (old*7 + d) / 8
	}
	n.rtt.Store(d)
	a.met.setRTT(n, d)
	a.markUp(n)
}

func (a *Agent) healthOnce(ctx context.Context, n *node) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.key+"/health", nil)
	req.Header.Set("User-Agent", "halapi-agent")
	resp, err := n.tr.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/health answered %s", resp.Status)
	}
	return nil
}

func (a *Agent) markUp(n *node) {
	if n.healthy.Load() {
		return
	}
	n.mu.Lock()
	if !n.healthy.Load() {
		n.down, n.kill = context.WithCancel(context.Background())
		n.healthy.Store(true)
		n.since.Store(time.Now().UnixNano())
	}
	n.mu.Unlock()
	a.met.health(n, true)
	a.log.Info("node healthy", "node", n.key)
	a.choosePreferred()
}

// markDown takes n out of rotation and aborts every request in flight on
// it (they move to another node).
func (a *Agent) markDown(n *node, err error) {
	msg := err.Error()
	n.lastErr.Store(&msg)
	if !n.healthy.Load() {
		return
	}
	n.mu.Lock()
	was := n.healthy.Swap(false)
	if was {
		n.kill()
		n.since.Store(time.Now().UnixNano())
	}
	n.mu.Unlock()
	if !was {
		return
	}
	a.met.health(n, false)
	a.log.Warn("node down", "node", n.key, "err", err)
	a.choosePreferred()
}

// choosePreferred keeps the preferred node while it is healthy (its
// stream cursor and warm connections stay useful) and otherwise moves to
// the healthy node with the lowest /health round trip.
func (a *Agent) choosePreferred() {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.preferred
	if old != nil && old.healthy.Load() {
		return
	}
	var best *node
	for _, n := range a.nodes {
		if !n.healthy.Load() {
			continue
		}
		if best == nil || n.rtt.Load() < best.rtt.Load() || (n.rtt.Load() == best.rtt.Load() && n.key < best.key) {
			best = n
		}
	}
	if best == nil || best == old {
		return
	}
	a.preferred = best
	if old != nil {
		a.failovers.Add(1)
		a.met.failover(old, best)
		a.log.Warn("failover", "from", old.key, "to", best.key)
	} else {
		a.log.Info("using node", "node", best.key)
	}
}

// candidates orders the nodes for one request: the preferred node, the
// other healthy ones by round trip, then the unhealthy ones (a last resort
// when every health check fails, e.g. during a network blip).
func (a *Agent) candidates() []*node {
	a.mu.RLock()
	pref := a.preferred
	out := make([]*node, 0, len(a.nodes))
	for _, n := range a.nodes {
		out = append(out, n)
	}
	a.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if (x == pref) != (y == pref) {
			return x == pref
		}
		if hx, hy := x.healthy.Load(), y.healthy.Load(); hx != hy {
			return hx
		}
		if x.rtt.Load() != y.rtt.Load() {
			return x.rtt.Load() < y.rtt.Load()
		}
		return x.key < y.key
	})
	if pref != nil && !pref.healthy.Load() {
		// demoted meanwhile: healthy ones first
		sort.SliceStable(out, func(i, j int) bool { return out[i].healthy.Load() && !out[j].healthy.Load() })
	}
	return out
}

// Preferred returns the key (scheme://host:port) of the node requests go
// to first, "" if none is healthy.
func (a *Agent) Preferred() string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.preferred == nil {
		return ""
	}
	return a.preferred.key
}

// refreshMembers learns the cluster's nodes from the members route; it
// reports false when no node gave a list it could use.
func (a *Agent) refreshMembers(ctx context.Context) bool {
	if a.cfg.Identity == nil && a.cfg.APIKey == "" {
		return true // nothing to learn with: the --server list it is
	}
	var view struct {
		Members []struct {
			ID     string `json:"id"`
			APIURL string `json:"api_url"`
			State  string `json:"state"`
		} `json:"members"`
	}
	var got bool
	for _, n := range a.candidates() {
		if !n.healthy.Load() {
			continue
		}
		if err := a.fetchMembers(ctx, n, &view); err != nil {
			a.log.Debug("member list", "node", n.key, "err", err)
			continue
		}
		got = true
		break
	}
	if !got {
		return false
	}
	listed := map[string]bool{}
	for _, m := range view.Members {
		u, err := parseNodeURL(m.APIURL)
		if err != nil || m.State == "left" {
			continue
		}
		key := u.Scheme + "://" + u.Host
		listed[key] = true
		n := a.addNode(u, false)
		if n == nil {
			continue
		}
		if len(m.ID) <= 255 {
			id := m.ID
			n.id.Store(&id)
		}
		a.startHealthLocked(n)
	}
	a.mu.RLock()
	var gone []*node
	for key, n := range a.nodes {
		if !n.static && !listed[key] {
			gone = append(gone, n)
		}
	}
	a.mu.RUnlock()
	for _, n := range gone {
		a.removeNode(n)
	}
	a.memberRefreshes.Add(1)
	return true
}

func (a *Agent) startHealthLocked(n *node) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.nodes[n.key] == n {
		a.startHealth(n)
	}
}

func (a *Agent) fetchMembers(ctx context.Context, n *node, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.key+MembersPath, nil)
	req.Header.Set("User-Agent", "halapi-agent")
	tr := n.tr
	if n.idTr != nil {
		tr = n.idTr
	} else {
		req.Header.Set("X-Api-Key", a.cfg.APIKey)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("members route answered %s", resp.Status)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}

// trace records where one client request went.
type trace struct {
	node     *node
	attempts int
}

// hopHeaders are connection-level headers a proxy must not forward
// (RFC 9110 §7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHop(h http.Header) {
	for _, f := range h.Values("Connection") {
		for _, name := range strings.Split(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Handler is the local listener's handler: every request is buffered
// (bounded), sent to the preferred node and moved to another one on a
// connection failure, a node going down, or a 502/503/504.
//
// A request that arrives on a TLS connection whose client presented the
// agent's own Identity certificate (the same key) is sent upstream with
// that certificate; a client certificate the agent does not hold is
// refused (the agent cannot present it). Anything else passes through
// with the client's own credential (API key, token) and no certificate.
func (a *Agent) Handler() http.Handler {
	return http.HandlerFunc(a.serve)
}

func (a *Agent) serve(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	useID := false
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// The same key as the agent's identity: the same certificate
		// or a renewal of it (renewals keep the key).
		if a.identitySPKI == nil || !bytes.Equal(r.TLS.PeerCertificates[0].RawSubjectPublicKeyInfo, a.identitySPKI) {
			writeErr(w, http.StatusForbidden, "halapi agent: this client certificate is not the one the agent holds; it cannot be presented to the cluster")
			return
		}
		useID = true
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		b, err := io.ReadAll(io.LimitReader(r.Body, a.cfg.MaxBody+1))
		if err != nil {
			writeErr(w, http.StatusBadRequest, "halapi agent: reading the request body: "+err.Error())
			return
		}
		if int64(len(b)) > a.cfg.MaxBody {
			writeErr(w, http.StatusRequestEntityTooLarge, "http: request body too large")
			return
		}
		body = b
	}
	hdr := r.Header // the handler owns the request: forwarded as is, minus what follows
	removeHop(hdr)
	hdr.Del("Expect") // the body is already here
	for _, k := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		hdr.Del(k) // the node sees this host, as without the agent
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && hdr.Get(IdempotencyHeader) == "" {
		hdr.Set(IdempotencyHeader, newKey())
	}
	tr := &trace{}
	var (
		resp  *http.Response
		err   error
		first *attemptResult
	)
	u := url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if n := a.relayNode(useID, body); n != nil {
		// the hot path: inline, to the preferred node (relay.go)
		resp, first = a.relayFirst(r, n, u.RequestURI(), hdr, body, useID, start, tr)
	}
	if resp == nil {
		ctx, cancel := context.WithDeadline(r.Context(), start.Add(a.cfg.RequestTimeout))
		defer cancel()
		tmpl := &http.Request{Method: r.Method, URL: &u, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: hdr}
		tmpl = tmpl.WithContext(ctx)
		resp, err = a.forward(tmpl, body, useID, tr, first)
	}
	code := http.StatusBadGateway
	if err != nil {
		if r.Context().Err() == nil {
			writeErr(w, code, "halapi agent: no node answered: "+err.Error())
		}
	} else {
		code = resp.StatusCode
		removeHop(resp.Header)
		dst := w.Header()
		for k, v := range resp.Header {
			dst[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		bp := copyBufs.Get().(*[]byte)
		_, _ = io.CopyBuffer(w, resp.Body, *bp)
		copyBufs.Put(bp)
		resp.Body.Close()
	}
	a.finish(r, tr, code, time.Since(start))
}

func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "agent-" + hex.EncodeToString(b[:])
}

func writeErr(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"message": msg})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (a *Agent) finish(r *http.Request, tr *trace, code int, d time.Duration) {
	name := ""
	if tr.node != nil {
		name = tr.node.key
	}
	a.met.request(name, code, d)
	a.recent.add(RequestRecord{Time: time.Now().UTC(), Method: r.Method, Path: r.URL.Path, Node: name,
		Status: code, Attempts: tr.attempts, Millis: float64(d.Microseconds()) / 1000})
}

// retryable statuses: the node is up but cannot serve (no leader, a
// proxy in front of it failing); another node may.
func retryStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// maxRetryBody bounds the answer kept from a refused attempt (returned if
// no other node does better).
const maxRetryBody = 64 << 10

// next picks the node for the next attempt: the preferred one first (no
// allocation on the common path), then the others in candidates order.
func (a *Agent) next(tried map[*node]bool) *node {
	if len(tried) == 0 {
		a.mu.RLock()
		p := a.preferred
		a.mu.RUnlock()
		if p != nil && p.healthy.Load() {
			return p
		}
	}
	for _, c := range a.candidates() {
		if !tried[c] {
			return c
		}
	}
	return nil
}

// hedgeable reports whether a request may be in flight on two nodes at
// once: reads, and the writes the nodes deduplicate by Idempotency-Key
// (lapi/idempotency.go). Other writes (login, registration, heartbeat)
// are only ever sent again after their attempt failed.
func hedgeable(method, path string) bool {
	switch method {
	case http.MethodGet, http.MethodHead:
		return true
	case http.MethodPost:
		return path == "/v1/alerts"
	case http.MethodDelete:
		return path == "/v1/decisions" || path == "/v1/alerts" ||
			strings.HasPrefix(path, "/v1/decisions/") || strings.HasPrefix(path, "/v1/alerts/")
	}
	return false
}

type attemptResult struct {
	n      *node
	resp   *http.Response
	err    error
	cancel context.CancelFunc
	// ch: a relayed first attempt still in flight reports there
	ch chan *attemptResult
}

// forward sends tmpl (header, URL path and query, context) to the nodes
// until one answers: the preferred node, then the others. A hedgeable
// request still unanswered after HedgeAfter is also sent to the next
// node (a live node can be stuck behind a hung leader: a follower
// forwarding a write to it waits for its own timeout); the first answer
// wins, the others are cancelled. first, if not nil, is the relayed first
// attempt (relay.go): done, or in flight past the hedge time.
func (a *Agent) forward(tmpl *http.Request, body []byte, useID bool, tr *trace, first *attemptResult) (*http.Response, error) {
	ctx := tmpl.Context()
	started := time.Now()
	hedge := hedgeable(tmpl.Method, tmpl.URL.Path)
	// Reads are hedged once (a big answer may just be slow to compute);
	// deduplicated writes in rounds (a slow write is a stuck one).
	isWrite := tmpl.Method != http.MethodGet && tmpl.Method != http.MethodHead
	var (
		lastErr  error
		last     *http.Response
		tried    map[*node]bool
		inflight []*attemptResult
		results  = make(chan *attemptResult, 4) // every result is read, here or by the drain in finish
		hedgeT   *time.Timer
		hedgeC   <-chan time.Time
	)
	defer func() {
		if hedgeT != nil {
			hedgeT.Stop()
		}
	}()
	// losers are cancelled and their answers discarded in the background
	finish := func(winner *attemptResult) {
		n := 0
		for _, r := range inflight {
			if r != winner {
				r.cancel()
				n++
			}
		}
		if n > 0 {
			go func() {
				for range n {
					if r := <-results; r.resp != nil {
						r.resp.Body.Close()
					}
				}
			}()
		}
	}
	launch := func(n *node) {
		if tried == nil {
			tried = make(map[*node]bool, 4)
		}
		tried[n] = true
		if tr.attempts > 0 {
			a.retries.Add(1)
		}
		tr.attempts++
		r := &attemptResult{n: n}
		actx, cancel := context.WithCancel(ctx)
		r.cancel = cancel
		inflight = append(inflight, r)
		go func() {
			r.resp, r.err = a.attempt(tmpl.WithContext(actx), n, body, useID)
			results <- r
		}()
		if hedge {
			if hedgeT == nil {
				hedgeT = time.NewTimer(a.cfg.HedgeAfter)
			} else {
				hedgeT.Reset(a.cfg.HedgeAfter)
			}
			hedgeC = hedgeT.C
		}
	}
	remove := func(r *attemptResult) {
		for i, x := range inflight {
			if x == r {
				inflight = append(inflight[:i], inflight[i+1:]...)
				return
			}
		}
	}
	// handle takes one attempt's result; done: forward returns (resp, err)
	handle := func(r *attemptResult) (*http.Response, error, bool) {
		remove(r)
		n := r.n
		tr.node = n
		if r.err != nil {
			r.cancel()
			if ctx.Err() != nil {
				finish(nil)
				return nil, r.err, true
			}
			lastErr = fmt.Errorf("%s: %w", n.key, r.err)
			n.errors.Add(1)
			reason := failReason(r.err)
			a.met.retry(n, reason)
			n.retries.Add(1)
			if reason != "timeout" && reason != "canceled" {
				// a refused or reset connection: out of rotation at
				// once, the health loop brings it back
				a.markDown(n, r.err)
			}
			return nil, nil, false
		}
		resp := r.resp
		if retryStatus(resp.StatusCode) {
			if last != nil {
				last.Body.Close()
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, maxRetryBody))
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(b))
			resp.ContentLength = int64(len(b))
			resp.Header.Del("Content-Length")
			last = resp
			a.met.retry(n, fmt.Sprintf("status_%d", resp.StatusCode))
			n.retries.Add(1)
			return nil, nil, false
		}
		if last != nil {
			last.Body.Close()
		}
		finish(r)
		n.requests.Add(1)
		return resp, nil, true
	}
	if first != nil {
		tried = map[*node]bool{first.n: true}
		if first.ch != nil {
			// in flight past the hedge time: hedge now
			results = first.ch
			inflight = append(inflight, first)
			fired := make(chan time.Time, 1)
			fired <- time.Now()
			hedgeC = fired
		} else if resp, err, done := handle(first); done {
			return resp, err
		}
	}
	for {
		if len(inflight) == 0 {
			n := a.next(tried)
			if n == nil {
				// Every node was tried once: start over after a pause,
				// while the request's time lasts (every node restarting),
				// or, when they answered 5xx (no leader yet: a slow
				// election), for RetryFor.
				if last != nil && time.Since(started) >= a.cfg.RetryFor {
					return last, nil
				}
				select {
				case <-ctx.Done():
					if last != nil {
						return last, nil
					}
					if lastErr == nil {
						lastErr = ctx.Err()
					}
					return nil, lastErr
				case <-time.After(200 * time.Millisecond):
				}
				clear(tried)
				continue
			}
			launch(n)
		}
		select {
		case <-hedgeC:
			hedgeC = nil
			n := a.next(tried)
			if (n == nil || !n.healthy.Load()) && isWrite {
				// every node has a copy: send another round (a node
				// stuck forwarding to a hung leader takes a new copy to
				// the new leader once it knows it); at most two copies
				// per node in flight, the oldest is given up
				clear(tried)
				n = a.next(tried)
				if len(inflight) >= 2*a.nodeCount() {
					inflight[0].cancel()
				}
			}
			if n != nil && n.healthy.Load() {
				a.met.retry(inflight[len(inflight)-1].n, "hedge")
				launch(n)
			}
			continue
		case r := <-results:
			if resp, err, done := handle(r); done {
				return resp, err
			}
		}
	}
}

func (a *Agent) nodeCount() int {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return len(a.nodes)
}

func failReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, errNodeDown):
		return "node_down"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "refused"
	default:
		return "connection"
	}
}

var errNodeDown = errors.New("node marked down by its health check")

// attempt sends one copy of tmpl to n. The attempt is aborted when n is
// marked down (a hung node: its health check times out) — also while the
// answer's body is being read.
func (a *Agent) attempt(tmpl *http.Request, n *node, body []byte, useID bool) (*http.Response, error) {
	down := n.downCtx()
	actx, cancel := context.WithCancelCause(tmpl.Context())
	var stop func() bool
	if down.Err() == nil {
		stop = context.AfterFunc(down, func() { cancel(errNodeDown) })
	}
	out := tmpl.WithContext(actx)
	u := *tmpl.URL
	u.Scheme, u.Host = n.base.Scheme, n.base.Host
	out.URL = &u
	out.Host = ""
	if body != nil {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.ContentLength = int64(len(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	t := n.tr
	if useID {
		if n.idTr == nil {
			cancel(nil)
			return nil, errors.New("no identity certificate configured")
		}
		t = n.idTr
	}
	resp, err := t.RoundTrip(out)
	if err != nil {
		if c := context.Cause(actx); errors.Is(c, errNodeDown) {
			err = errNodeDown
		}
		if stop != nil {
			stop()
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = &releaseBody{ReadCloser: resp.Body, release: func() {
		if stop != nil {
			stop()
		}
		cancel(nil)
	}}
	return resp, nil
}

type releaseBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// RequestRecord is one proxied request as `halapi agent status` shows it
// (the path only: a query may carry a token).
type RequestRecord struct {
	Time     time.Time `json:"time"`
	Method   string    `json:"method"`
	Path     string    `json:"path"`
	Node     string    `json:"node"`
	Status   int       `json:"status"`
	Attempts int       `json:"attempts"`
	Millis   float64   `json:"ms"`
}

// recentLog keeps the last requests.
type recentLog struct {
	mu   sync.Mutex
	buf  [32]RequestRecord
	next int
	n    int
}

func (l *recentLog) add(r RequestRecord) {
	if len(r.Path) > 256 {
		r.Path = r.Path[:256]
	}
	l.mu.Lock()
	l.buf[l.next] = r
	l.next = (l.next + 1) % len(l.buf)
	if l.n < len(l.buf) {
		l.n++
	}
	l.mu.Unlock()
}

func (l *recentLog) list() []RequestRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]RequestRecord, 0, l.n)
	for i := 0; i < l.n; i++ {
		out = append(out, l.buf[(l.next-l.n+i+len(l.buf))%len(l.buf)])
	}
	return out
}
