package testutil

import (
	"net"
	"testing"
	"time"
)

func TestFreeAddrsDistinctAndBindable(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		for _, a := range []string{FreeAddr(t), FreeGossipAddr(t)} {
			if seen[a] {
				t.Fatalf("%s handed out twice", a)
			}
			seen[a] = true
		}
	}
	g := FreeGossipAddr(t)
	l, err := net.Listen("tcp", g)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", g)
	if err != nil {
		t.Fatal(err)
	}
	u.Close()
	if p := FreePort(t); p <= 0 || p > 65535 {
		t.Fatalf("FreePort %d", p)
	}
}

func TestEventually(t *testing.T) {
	n := 0
	if !Eventually(5*time.Second, func() bool { n++; return n == 5 }) {
		t.Fatal("a condition true at the fifth call did not hold")
	}
	start := time.Now()
	if Eventually(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("a false condition held")
	}
	if d := time.Since(start); d < 50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("gave up after %v, want about 50ms", d)
	}
}
