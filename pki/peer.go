package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// PeerTLS returns the mutual-TLS configs of the cluster port (raft and
// forwarding): both sides present their node certificate from r and
// accept only a peer whose chain ends at the cluster root (rootPEM), whose
// leaf carries nodeOU and is not revoked (revoked may be nil). Host names
// are not checked: peers dial advertise addresses, which may be proxies.
func PeerTLS(rootPEM []byte, nodeOU string, r *Renewer, revoked func(serial string) bool) (server, client *tls.Config, err error) {
	roots, err := parseCerts(rootPEM)
	if err != nil || len(roots) == 0 {
		return nil, nil, errors.New("pki: no root certificate for peer TLS")
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	if nodeOU == "" {
		nodeOU = DefaultNodeOU
	}
	checkLeaf := func(leaf *x509.Certificate) error {
		if !slices.Contains(leaf.Subject.OrganizationalUnit, nodeOU) {
			return fmt.Errorf("peer certificate %q is not a node certificate (OU %v)", leaf.Subject.CommonName, leaf.Subject.OrganizationalUnit)
		}
		if revoked != nil && revoked(leaf.SerialNumber.String()) {
			return fmt.Errorf("peer certificate %q (serial %s) is revoked", leaf.Subject.CommonName, leaf.SerialNumber)
		}
		return nil
	}
	server = &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: r.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      pool,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) == 0 {
				return errors.New("peer presented no verified certificate")
			}
			return checkLeaf(cs.VerifiedChains[0][0])
		},
	}
	client = &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: r.GetClientCertificate,
		InsecureSkipVerify:   true, // chain verified below, names deliberately not
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyChain(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth); err != nil {
				return err
			}
			return checkLeaf(cs.PeerCertificates[0])
		},
	}
	return server, client, nil
}

// PeerTLS is PeerTLS with this CA's root, node OU and FSM revocations.
func (c *CA) PeerTLS(r *Renewer) (server, client *tls.Config) {
	s, cl, err := PeerTLS(c.rootPEM, c.opts.NodeOU, r, func(sn string) bool { return IsRevokedIn(c.store, sn) })
	if err != nil {
		panic(err) // the root was parsed in New
	}
	return s, cl
}

// PeerWrap holds the cluster port's TLS configs; its Server and Client
// methods are the `wrap func(net.Conn) net.Conn` hooks of the cluster
// mux (accepted connections) and of the raft/RPC dialers. It can be
// installed before the configs exist (the first node creates its CA after
// raft is up): until Set is called every connection fails, there is no
// clear-text fallback.
type PeerWrap struct {
	server, client atomic.Pointer[tls.Config]
	// HandshakeTimeout bounds the client handshake (default 10 s).
	HandshakeTimeout time.Duration
	// OnRefused, if set, is called when a peer rejects this node's
	// certificate ("bad certificate" alert): revoked, or not from the
	// cluster's CA. In TLS 1.3 the client learns it on its first read.
	OnRefused func(remote string)
	// Revoked, if set, is checked again at most every second on accepted
	// connections, which are closed once their peer's certificate is
	// revoked.
	Revoked func(serial string) bool
}

// Set installs (or replaces) the configs.
func (p *PeerWrap) Set(server, client *tls.Config) {
	p.server.Store(server)
	p.client.Store(client)
}

// notConfigured closes c and stands for it: every operation fails
// (the node has no cluster TLS yet).
func notConfigured(c net.Conn) net.Conn {
	c.Close()
	return failedConn{Conn: c, err: errors.New("pki: cluster TLS not configured yet")}
}

// Server wraps an accepted connection. The handshake runs on first use,
// under the read deadline the mux sets for the service byte.
func (p *PeerWrap) Server(c net.Conn) net.Conn {
	cfg := p.server.Load()
	if cfg == nil {
		return notConfigured(c)
	}
	tc := tls.Server(c, cfg)
	if p.Revoked != nil {
		return &recheckConn{Conn: tc, revoked: p.Revoked}
	}
	return tc
}

// recheckInterval is how often an accepted cluster connection re-checks
// that the peer's certificate is still not revoked.
const recheckInterval = time.Second

// recheckConn closes an accepted cluster connection once the certificate
// its peer presented is revoked: the handshake check alone would let a
// connection opened before a `cluster remove` live on.
type recheckConn struct {
	*tls.Conn
	revoked func(serial string) bool
	serial  string
	checked time.Time
}

func (c *recheckConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b) // the first read runs the handshake
	if err != nil {
		return n, err
	}
	if now := time.Now(); now.Sub(c.checked) >= recheckInterval {
		c.checked = now
		if c.serial == "" {
			if pcs := c.ConnectionState().PeerCertificates; len(pcs) > 0 {
				c.serial = pcs[0].SerialNumber.String()
			}
		}
		if c.serial != "" && c.revoked(c.serial) {
			c.Conn.Close()
			return 0, fmt.Errorf("pki: the peer's certificate (serial %s) was revoked", c.serial)
		}
	}
	return n, err
}

// Client wraps a dialed connection and completes the handshake at once
// (bounded by HandshakeTimeout); a failed handshake yields a connection
// whose every operation returns the error.
func (p *PeerWrap) Client(c net.Conn) net.Conn {
	cfg := p.client.Load()
	if cfg == nil {
		return notConfigured(c)
	}
	tc := tls.Client(c, cfg)
	to := p.HandshakeTimeout
	if to <= 0 {
		to = 10 * time.Second
	}
	_ = c.SetDeadline(time.Now().Add(to))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return failedConn{Conn: c, err: fmt.Errorf("cluster TLS handshake with %s: %w", c.RemoteAddr(), err)}
	}
	_ = c.SetDeadline(time.Time{})
	if p.OnRefused != nil {
		return &refusalConn{Conn: tc, p: p}
	}
	return tc
}

// refusalConn reports a peer's rejection of our certificate. It embeds the
// *tls.Conn, so ConnectionState stays available.
type refusalConn struct {
	*tls.Conn
	p    *PeerWrap
	once sync.Once
}

func (c *refusalConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil && strings.Contains(err.Error(), "bad certificate") {
		c.once.Do(func() { c.p.OnRefused(c.RemoteAddr().String()) })
	}
	return n, err
}

// failedConn is a closed connection that reports why.
type failedConn struct {
	net.Conn
	err error
}

func (f failedConn) Read([]byte) (int, error)  { return 0, f.err }
func (f failedConn) Write([]byte) (int, error) { return 0, f.err }
