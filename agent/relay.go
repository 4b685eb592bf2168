package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The relay is the agent's hot path: the first attempt of a request goes
// to the preferred node from the handler's own goroutine, over a pooled
// keep-alive connection, written and read with no other goroutine, channel
// or timer than the connection's deadlines (http.Transport hands each
// request to a connection's write loop and its answer back from a read
// loop: two goroutine switches, which on a busy host are the biggest part
// of the agent's cost). Anything unusual — a refused or broken connection,
// an answer 502/503/504, no answer header within HedgeAfter for a
// hedgeable request, the node going down — continues in forward, the
// general path with retries and hedging, where the relayed attempt is one
// more attempt (still in flight, if it only was slow).

// maxRelayBody: larger request bodies take the general path (a write that
// does not fit in the socket buffers could block the handler past the
// hedge time).
const maxRelayBody = 64 << 10

const (
	relayMaxIdle     = 64
	relayIdleTimeout = 90 * time.Second
	// relayHeaderTimeout bounds the wait for an answer's header, like the
	// transport's ResponseHeaderTimeout.
	relayHeaderTimeout = 30 * time.Second
)

// aLongTimeAgo is a deadline in the past: it wakes a blocked read or write.
var aLongTimeAgo = time.Unix(1, 0)

// upConn is one keep-alive connection to a node.
type upConn struct {
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	idle time.Time
}

// connPool holds one node's idle relay connections (plain, or presenting
// the identity certificate).
type connPool struct {
	dial func(ctx context.Context) (net.Conn, error)

	mu     sync.Mutex
	idle   []*upConn
	closed bool
}

func (p *connPool) get() *upConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.idle) > 0 {
		uc := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		if time.Since(uc.idle) < relayIdleTimeout {
			return uc
		}
		_ = uc.c.Close()
	}
	return nil
}

func (p *connPool) put(uc *upConn) {
	uc.idle = time.Now()
	p.mu.Lock()
	if !p.closed && len(p.idle) < relayMaxIdle {
		p.idle = append(p.idle, uc)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	_ = uc.c.Close()
}

// closeIdle closes the idle connections; with forever, later ones too.
func (p *connPool) closeIdle(forever bool) {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	if forever {
		p.closed = true
	}
	p.mu.Unlock()
	for _, uc := range idle {
		_ = uc.c.Close()
	}
}

func (p *connPool) newConn(ctx context.Context) (*upConn, error) {
	c, err := p.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &upConn{c: c, br: bufio.NewReaderSize(c, 4096), bw: bufio.NewWriterSize(c, 4096)}, nil
}

// relayPool builds the relay's pool for n, dialling as the transport does
// (same timeouts and TLS settings; identity: the client certificate).
func (a *Agent) relayPool(n *node, identity bool) *connPool {
	d := &net.Dialer{Timeout: time.Second, KeepAlive: 15 * time.Second}
	addr := n.base.Host
	var tc *tls.Config
	if n.base.Scheme == "https" {
		if a.cfg.TLS != nil {
			tc = a.cfg.TLS.Clone()
		} else {
			tc = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if tc.ServerName == "" {
			tc.ServerName = n.base.Hostname()
		}
		if identity {
			tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.identity(), nil }
		}
	}
	return &connPool{dial: func(ctx context.Context) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || tc == nil {
			return c, err
		}
		tconn := tls.Client(c, tc)
		hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := tconn.HandshakeContext(hctx); err != nil {
			_ = c.Close()
			return nil, err
		}
		return tconn, nil
	}}
}

const (
	abortDown     int32 = 1 // the node's health check failed
	abortCanceled int32 = 2 // the client left, or another attempt won
)

// relayAttempt is one attempt over the relay.
type relayAttempt struct {
	n      *node
	pool   *connPool
	method string
	uri    string
	host   string
	hdr    http.Header
	body   []byte
	final  time.Time // the request's deadline (RequestTimeout)

	wrote time.Time // when the request was written

	mu      sync.Mutex
	uc      *upConn
	aborted int32

	stopDown, stopClient func() bool
}

func (ra *relayAttempt) abort(why int32) {
	ra.mu.Lock()
	if ra.aborted == 0 {
		ra.aborted = why
	}
	if ra.uc != nil {
		_ = ra.uc.c.SetDeadline(aLongTimeAgo)
	}
	ra.mu.Unlock()
}

func (ra *relayAttempt) abortedWhy() int32 {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	return ra.aborted
}

// setConn makes uc the attempt's connection; false if it was aborted.
func (ra *relayAttempt) setConn(uc *upConn) bool {
	ra.mu.Lock()
	defer ra.mu.Unlock()
	ra.uc = uc
	return ra.aborted == 0
}

// mapErr reports an aborted attempt as such (its error is a deadline's).
func (ra *relayAttempt) mapErr(err error) error {
	switch ra.abortedWhy() {
	case abortDown:
		return errNodeDown
	case abortCanceled:
		return context.Canceled
	}
	return err
}

// release ends the attempt: the connection goes back to the pool when
// the answer was read to its end and nothing aborted it.
func (ra *relayAttempt) release(reuse bool) {
	if ra.stopDown != nil && !ra.stopDown() {
		reuse = false // the abort ran or is running
	}
	if ra.stopClient != nil && !ra.stopClient() {
		reuse = false
	}
	ra.mu.Lock()
	uc := ra.uc
	ra.uc = nil
	if ra.aborted != 0 {
		reuse = false
	}
	ra.mu.Unlock()
	if uc == nil {
		return
	}
	if reuse {
		ra.pool.put(uc)
	} else {
		_ = uc.c.Close()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writeRequest writes the request as http.Transport would (Host, the
// client's first User-Agent or Go's default, the other headers, a
// Content-Length for a body or a POST/PUT/PATCH).
func (ra *relayAttempt) writeRequest(bw *bufio.Writer) error {
	bw.WriteString(ra.method)
	bw.WriteByte(' ')
	bw.WriteString(ra.uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(ra.host)
	bw.WriteString("\r\n")
	ua := "Go-http-client/1.1"
	if v, ok := ra.hdr["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = v[0]
		}
	}
	if ua != "" {
		writeHeaderLine(bw, "User-Agent", ua)
	}
	for k, vs := range ra.hdr {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		for _, v := range vs {
			writeHeaderLine(bw, k, v)
		}
	}
	if len(ra.body) > 0 || ra.method == http.MethodPost || ra.method == http.MethodPut || ra.method == http.MethodPatch {
		var b [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(b[:0], int64(len(ra.body)), 10))
		bw.WriteString("\r\n")
	}
	bw.WriteString("\r\n")
	bw.Write(ra.body)
	return bw.Flush()
}

var newlineToSpace = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

func writeHeaderLine(bw *bufio.Writer, k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = newlineToSpace.Replace(v)
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
}

// send writes the request and waits for the answer's first byte until
// `until`. A reused connection that fails before any byte of the answer
// (the node closed it while idle) is replaced once by a fresh one, as
// http.Transport does; the request is the same, with the same key.
// On a timeout the connection stays with the attempt (await goes on).
func (ra *relayAttempt) send(until time.Time) error {
	for try := 0; ; try++ {
		// The retry always dials: the other idle connections to the node
		// are as likely to be dead as the one that just failed.
		var uc *upConn
		if try == 0 {
			uc = ra.pool.get()
		}
		reused := uc != nil
		if uc == nil {
			ctx, cancel := context.WithDeadline(context.Background(), ra.final)
			var err error
			uc, err = ra.pool.newConn(ctx)
			cancel()
			if err != nil {
				return err
			}
		}
		if !ra.setConn(uc) {
			_ = uc.c.Close()
			return ra.mapErr(nil)
		}
		_ = uc.c.SetWriteDeadline(ra.final)
		_ = uc.c.SetReadDeadline(until)
		err := ra.writeRequest(uc.bw)
		ra.wrote = time.Now()
		if err == nil {
			_, err = uc.br.Peek(1)
		}
		if err == nil {
			return nil
		}
		if isTimeout(err) && ra.abortedWhy() == 0 {
			return err
		}
		ra.mu.Lock()
		ra.uc = nil
		ra.mu.Unlock()
		_ = uc.c.Close()
		if reused && try == 0 && ra.abortedWhy() == 0 {
			continue
		}
		return ra.mapErr(err)
	}
}

// await waits for the first byte until the header timeout (after send
// timed out at the hedge time).
func (ra *relayAttempt) await() error {
	ra.mu.Lock()
	uc := ra.uc
	ra.mu.Unlock()
	if uc == nil {
		return ra.mapErr(errors.New("relay: no connection"))
	}
	_ = uc.c.SetReadDeadline(minTime(ra.wrote.Add(relayHeaderTimeout), ra.final))
	if _, err := uc.br.Peek(1); err != nil {
		return ra.mapErr(err)
	}
	return nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

var (
	headReq  = &http.Request{Method: http.MethodHead}
	otherReq = &http.Request{Method: http.MethodGet}
)

// readResponse reads the answer's header (its first byte is there).
func (ra *relayAttempt) readResponse() (*http.Response, error) {
	uc := ra.uc
	_ = uc.c.SetReadDeadline(ra.final)
	req := otherReq
	if ra.method == http.MethodHead {
		req = headReq
	}
	for {
		resp, err := http.ReadResponse(uc.br, req)
		if err != nil {
			return nil, ra.mapErr(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // informational: the answer follows
		}
		resp.Request = nil
		resp.Body = &relayBody{rc: resp.Body, ra: ra, keep: !resp.Close, eof: resp.Body == http.NoBody}
		return resp, nil
	}
}

// relayBody is an answer's body; closing it releases the connection.
type relayBody struct {
	rc     io.ReadCloser
	ra     *relayAttempt
	keep   bool
	eof    bool
	closed bool
}

func (b *relayBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		err = b.ra.mapErr(err)
	}
	return n, err
}

func (b *relayBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if !b.eof {
		// net/http would read the rest of the body to its end: cut the
		// connection instead (it is not reused)
		b.ra.abort(abortCanceled)
	}
	_ = b.rc.Close()
	b.ra.release(b.eof && b.keep)
	return nil
}

// relayFirst sends the first attempt of a request to n inline. It returns
// the answer when n gave one the client should get; otherwise the attempt
// as forward's first result: done (an error or a 502/503/504 answer), or
// still in flight (no answer header within the hedge time) with its
// goroutine reporting to first.ch.
func (a *Agent) relayFirst(r *http.Request, n *node, uri string, hdr http.Header, body []byte, useID bool,
	start time.Time, tr *trace) (*http.Response, *attemptResult) {
	down := n.downCtx()
	pool := n.relay
	if useID {
		pool = n.idRelay
	}
	ra := &relayAttempt{n: n, pool: pool, method: r.Method, uri: uri, host: n.base.Host, hdr: hdr, body: body,
		final: start.Add(a.cfg.RequestTimeout)}
	ra.stopDown = context.AfterFunc(down, func() { ra.abort(abortDown) })
	ra.stopClient = context.AfterFunc(r.Context(), func() { ra.abort(abortCanceled) })
	tr.attempts = 1
	res := &attemptResult{n: n, cancel: func() { ra.abort(abortCanceled) }}
	hedge := hedgeable(r.Method, r.URL.Path)
	until := minTime(start.Add(relayHeaderTimeout), ra.final)
	if hedge {
		until = start.Add(a.cfg.HedgeAfter)
	}
	err := ra.send(until)
	if err != nil && hedge && isTimeout(err) {
		// slow, not failed: it stays in flight while forward hedges
		res.ch = make(chan *attemptResult, 4)
		go func() {
			err := ra.await()
			if err == nil {
				res.resp, err = ra.readResponse()
			}
			if err != nil {
				ra.release(false)
				res.err = err
			}
			res.ch <- res
		}()
		return nil, res
	}
	if err == nil {
		res.resp, err = ra.readResponse()
	}
	if err != nil {
		ra.release(false)
		res.err = err
		return nil, res
	}
	if retryStatus(res.resp.StatusCode) {
		return nil, res
	}
	tr.node = n
	n.requests.Add(1)
	return res.resp, nil
}

// relayNode is the node a request may take the relay to: a preferred node
// that is up, no identity needed that the agent lacks, a body small
// enough.
func (a *Agent) relayNode(useID bool, body []byte) *node {
	if len(body) > maxRelayBody {
		return nil
	}
	a.mu.RLock()
	p := a.preferred
	a.mu.RUnlock()
	if p == nil || !p.healthy.Load() || (useID && p.idRelay == nil) || p.downCtx().Err() != nil {
		return nil
	}
	return p
}
