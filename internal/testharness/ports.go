package testharness

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Ports hands out loopback ports, never the same port twice. Asking the
// kernel for port 0 and closing the listener is not enough: the kernel may
// offer the same port to the next request (a node once got one port for
// both --listen and --cluster-listen), and a port from the ephemeral range
// may be taken by an outgoing connection (a client, a load generator)
// before the server binds it (`bind: address already in use`, seen in CI).
// So ports are taken below the ephemeral range, which outgoing connections
// never use, from a random starting point (two test or benchmark processes
// at once walk different sequences), each checked free before it is handed
// out. Where the ephemeral range starts too low to leave room, the kernel
// picks.
type Ports struct {
	mu     sync.Mutex
	lo, hi int // candidate range [lo, hi); hi == 0: ask the kernel
	next   int
	given  map[int]bool
}

// NewPorts returns an allocator below the machine's ephemeral port range
// (/proc/sys/net/ipv4/ip_local_port_range; 32768 when unreadable).
func NewPorts() *Ports {
	eph := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				eph = v
			}
		}
	}
	return newPorts(10000, eph)
}

func newPorts(lo, eph int) *Ports {
	p := &Ports{given: map[int]bool{}}
	if eph >= lo+2000 {
		p.lo, p.hi = lo, eph
		p.next = p.lo + rand.IntN(p.hi-p.lo)
	}
	return p
}

// maxTries bounds the candidates one Port call looks at.
const maxTries = 2000

// Port returns a port of host (an IP address) free for TCP, and for UDP too
// when udp is set (memberlist gossip uses both), that p has not handed out
// before.
func (p *Ports) Port(host string, udp bool) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last error
	for range maxTries {
		port, err := p.candidate(host)
		if err != nil {
			return 0, err
		}
		if p.given[port] {
			continue
		}
		if err := bindable(net.JoinHostPort(host, strconv.Itoa(port)), udp); err != nil {
			last = err
			continue
		}
		p.given[port] = true
		return port, nil
	}
	if last == nil {
		last = errors.New("every candidate already handed out")
	}
	return 0, fmt.Errorf("no free port on %s: %w", host, last)
}

// Addr is Port as host:port.
func (p *Ports) Addr(host string, udp bool) (string, error) {
	port, err := p.Port(host, udp)
	if err != nil {
		return "", err
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// candidate is the next port to try.
func (p *Ports) candidate(host string) (int, error) {
	if p.hi == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return 0, fmt.Errorf("reserve a port: %w", err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	port := p.next
	if p.next++; p.next >= p.hi {
		p.next = p.lo
	}
	return port, nil
}

// bindable reports why addr cannot be bound now (TCP, and UDP when udp).
func bindable(addr string, udp bool) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	if udp {
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return err
		}
		u.Close()
	}
	return nil
}

// defaultPorts is the allocator of this process: every server a test
// binary or a benchmark starts takes its ports from it.
var defaultPorts = sync.OnceValue(NewPorts)

// FreeAddr is a 127.0.0.1:port free for TCP, never handed out before in
// this process.
func FreeAddr() (string, error) { return defaultPorts().Addr("127.0.0.1", false) }

// FreeGossipAddr is a 127.0.0.1:port free for TCP and UDP, never handed
// out before in this process.
func FreeGossipAddr() (string, error) { return defaultPorts().Addr("127.0.0.1", true) }

// FreePortOn is a port of host (any loopback address) free for TCP, and
// UDP with udp, never handed out before in this process.
func FreePortOn(host string, udp bool) (int, error) { return defaultPorts().Port(host, udp) }
