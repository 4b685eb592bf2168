package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halapi/halapi/internal/testutil"
)

// The alternative to the agent that needs nothing on the client host: one
// DNS name with every node's address. These tests measure, on loopback,
// what a Go client (crowdsec's apiclient and go-cs-bouncer use net/http
// with Go's resolver) does with it when the first address is a dead node
// and when it is a hung one. Figures go to docs/design/agent.md.

// fakeDNS answers A queries for any name with addrs (in that order) and
// AAAA queries with nothing.
func fakeDNS(t *testing.T, addrs ...net.IP) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			if len(q) < 12 {
				continue
			}
			off := 12
			for off < len(q) && q[off] != 0 {
				off += int(q[off]) + 1
			}
			off++ // the root label
			if off+4 > len(q) {
				continue
			}
			qtype := binary.BigEndian.Uint16(q[off:])
			end := off + 4
			resp := append([]byte{}, q[:end]...)
			binary.BigEndian.PutUint16(resp[2:], 0x8180) // response, RD, RA, no error
			binary.BigEndian.PutUint16(resp[4:], 1)
			binary.BigEndian.PutUint16(resp[8:], 0)
			binary.BigEndian.PutUint16(resp[10:], 0)
			answers := 0
			if qtype == 1 {
				for _, ip := range addrs {
					resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4)
					resp = append(resp, ip.To4()...)
					answers++
				}
			}
			binary.BigEndian.PutUint16(resp[6:], uint16(answers))
			_, _ = pc.WriteTo(resp, from)
		}
	}()
	return pc.LocalAddr().String()
}

// dnsClient is a Go HTTP client whose resolver is the fake DNS server, as
// a client configured with one URL naming every node would be.
func dnsClient(dns string, timeout time.Duration) *http.Client {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns)
	}}
	d := &net.Dialer{Resolver: r}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext}}
}

// serveOn answers every request with 200 on ip:port.
func serveOn(t *testing.T, ip string, port int) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
}

// hungOn accepts connections on ip:port and never answers (a stopped or
// wedged process whose kernel still completes handshakes).
func hungOn(t *testing.T, ip string, port int) *atomic.Int64 {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	var accepted atomic.Int64
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			accepted.Add(1)
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return &accepted
}

func freePort(t *testing.T) int { return testutil.FreePort(t) }

// A dead node first in the DNS answer (connection refused) costs a Go
// client almost nothing: it tries the next address at once.
func TestAlternativeDNSDeadNodeIsSkipped(t *testing.T) {
	port := freePort(t)
	serveOn(t, "127.0.0.63", port) // 127.0.0.62: nothing listens
	dns := fakeDNS(t, net.ParseIP("127.0.0.62"), net.ParseIP("127.0.0.63"))
	c := dnsClient(dns, 5*time.Second)
	start := time.Now()
	resp, err := c.Get("http://lapi.halapi.test.:" + strconv.Itoa(port) + "/v1/decisions")
	if err != nil {
		t.Fatalf("DNS name with a dead first address: %v", err)
	}
	resp.Body.Close()
	t.Logf("dead first address, fresh connection: answered in %v", time.Since(start))
}

// A hung node first in the DNS answer stalls a Go client for its whole
// timeout: the connection succeeds, so the next address is never tried.
// crowdsec's apiclient then backs off and retries the same name (and may
// get the same first address again); go-cs-bouncer waits for its next
// tick. The agent moves the request in under a second
// (TestHungNodeRequestMoves).
func TestAlternativeDNSHungNodeStallsTheClient(t *testing.T) {
	port := freePort(t)
	accepted := hungOn(t, "127.0.0.62", port)
	serveOn(t, "127.0.0.63", port)
	dns := fakeDNS(t, net.ParseIP("127.0.0.62"), net.ParseIP("127.0.0.63"))
	const timeout = 2 * time.Second
	c := dnsClient(dns, timeout)
	start := time.Now()
	resp, err := c.Get("http://lapi.halapi.test.:" + strconv.Itoa(port) + "/v1/decisions")
	if err == nil {
		resp.Body.Close()
		if accepted.Load() == 0 {
			t.Skip("the resolver put the live address first; nothing measured")
		}
		t.Fatal("the request through a hung first address succeeded")
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("want a timeout, got %v", err)
	}
	if d := time.Since(start); d < timeout {
		t.Fatalf("failed after %v, before the client's timeout", d)
	}
	t.Logf("hung first address: the request failed after the client's whole timeout (%v): %v", time.Since(start).Round(time.Millisecond), err)
}
