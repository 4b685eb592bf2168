package cluster

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// One TCP port carries raft and the internal RPC service. The first byte a
// dialer writes on a new connection names the service (rqlite's scheme).
const (
	muxRaft byte = 1
	muxRPC  byte = 2
)

// muxListener accepts on the cluster port and hands each connection to the
// service named by its first byte.
type muxListener struct {
	ln      net.Listener
	subs    map[byte]*subListener
	closeMu sync.Once
	done    chan struct{}
	// wrap, if set, secures each accepted connection (mTLS, PKI issue).
	wrap func(net.Conn) net.Conn
}

func newMux(ln net.Listener) *muxListener {
	m := &muxListener{ln: ln, subs: map[byte]*subListener{}, done: make(chan struct{})}
	for _, b := range []byte{muxRaft, muxRPC} {
		m.subs[b] = &subListener{parent: m, ch: make(chan net.Conn, 16)}
	}
	return m
}

func (m *muxListener) serve() {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.Close()
			return
		}
		go m.route(c)
	}
}

func (m *muxListener) route(c net.Conn) {
	if m.wrap != nil {
		c = m.wrap(c)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	sub, ok := m.subs[b[0]]
	if !ok {
		c.Close()
		return
	}
	select {
	case sub.ch <- c:
	case <-m.done:
		c.Close()
	}
}

func (m *muxListener) Close() error {
	m.closeMu.Do(func() {
		close(m.done)
		_ = m.ln.Close()
	})
	return nil
}

type subListener struct {
	parent *muxListener
	ch     chan net.Conn
}

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.ch:
		return c, nil
	case <-s.parent.done:
		return nil, net.ErrClosed
	}
}

func (s *subListener) Close() error   { return nil }
func (s *subListener) Addr() net.Addr { return s.parent.ln.Addr() }

// sourceFor returns the local address outgoing cluster connections are
// made from: the host of the cluster listener, unless it is unspecified.
func sourceFor(listen net.Addr) *net.TCPAddr {
	if ta, ok := listen.(*net.TCPAddr); ok && ta.IP != nil && !ta.IP.IsUnspecified() {
		return &net.TCPAddr{IP: ta.IP}
	}
	return nil
}

// dialService opens a connection to a node's cluster port for one service.
func dialService(addr string, svc byte, timeout time.Duration, src *net.TCPAddr, wrap func(net.Conn) net.Conn) (net.Conn, error) {
	return dialServiceContext(context.Background(), addr, svc, timeout, src, wrap)
}

// dialServiceContext is dialService abandoned when ctx ends (a peer that
// accepts connections but does not answer, such as a stopped process
// behind its kernel's backlog, stalls a TLS handshake until the timeout).
func dialServiceContext(ctx context.Context, addr string, svc byte, timeout time.Duration, src *net.TCPAddr, wrap func(net.Conn) net.Conn) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	if src != nil {
		d.LocalAddr = src
	}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		c = wrap(c)
	}
	_ = c.SetWriteDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	_, err = c.Write([]byte{svc})
	if !stop() {
		c.Close()
		return nil, errors.Join(ctx.Err(), err)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// raftLayer is raft's StreamLayer on the muxed port.
type raftLayer struct {
	*subListener
	advertise net.Addr
	source    *net.TCPAddr
	wrap      func(net.Conn) net.Conn
	// stop ends Dial's retries (node closing).
	stop <-chan struct{}
}

func (r *raftLayer) Addr() net.Addr { return r.advertise }

// dialRetry is the pause between two dials of a peer that refused the
// connection.
const dialRetry = 50 * time.Millisecond

// Dial connects to a peer's raft service. A refused connection (the peer's
// process is down, its host is up) is retried every 50 ms until timeout:
// raft counts each failed RPC and backs off exponentially per follower (up
// to ~10 s), so a follower restarted after a few seconds would otherwise
// wait that long for the leader's next attempt. Blocking here instead keeps
// the failure count low and reconnects within 50 ms of the restart.
func (r *raftLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		c, err := dialService(string(address), muxRaft, time.Until(deadline), r.source, r.wrap)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Until(deadline) < dialRetry {
			return c, err
		}
		select {
		case <-r.stop:
			return nil, err
		case <-r.parent.done:
			return nil, err
		case <-time.After(dialRetry):
		}
	}
}
