package main

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

// Ports for the servers the benchmark starts come from one allocator that
// never hands out the same port twice in this process. Asking the kernel
// for port 0 and closing the listener is not enough: the kernel may give
// the same port to the next request (a node once got one port for both
// --listen and --cluster-listen), and a port it picks from the ephemeral
// range may be taken by one of the load generator's outgoing connections
// before the server binds it. So ports are taken below the ephemeral range
// (which outgoing connections never use), from a random starting point
// (two benchmark processes at once walk different sequences), each one
// checked free for TCP (and UDP for gossip) before it is handed out.

type portAllocator struct {
	mu     sync.Mutex
	lo, hi int // candidate range [lo, hi); hi == 0: ask the kernel
	next   int
	given  map[int]bool
}

var ports = newPortAllocator()

func newPortAllocator() *portAllocator {
	p := &portAllocator{given: map[int]bool{}}
	eph := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				eph = v
			}
		}
	}
	if eph >= 12000 {
		p.lo, p.hi = 10000, eph
		p.next = p.lo + rand.IntN(p.hi-p.lo)
	}
	return p
}

// addr returns a loopback host:port free for TCP (and for UDP too when
// udp is set) that this process has not been given before.
func (p *portAllocator) addr(udp bool) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range 2000 {
		port, err := p.candidate()
		if err != nil {
			return "", err
		}
		if p.given[port] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if !free(addr, udp) {
			continue
		}
		p.given[port] = true
		return addr, nil
	}
	return "", errors.New("no free loopback port found")
}

// candidate is the next port to try.
func (p *portAllocator) candidate() (int, error) {
	if p.hi == 0 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("reserve a port: %w", err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port, nil
	}
	port := p.next
	p.next++
	if p.next >= p.hi {
		p.next = p.lo
	}
	return port, nil
}

// free reports whether addr can be bound now (TCP, and UDP when udp).
func free(addr string, udp bool) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	if udp {
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}

// freeLoopbackAddr is a loopback TCP port never handed out before.
func freeLoopbackAddr() (string, error) { return ports.addr(false) }

// freeGossipAddr is a loopback port free for both TCP and UDP (memberlist
// uses both), never handed out before.
func freeGossipAddr() (string, error) { return ports.addr(true) }
