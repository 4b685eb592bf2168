package cluster

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// A refused raft connection is retried within the dial timeout, so a peer
// that comes back is reached at once (no raft failure, no backoff); other
// errors and closing end the retries.
func TestRaftDialRetriesRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // now refused

	stop := make(chan struct{})
	layer := &raftLayer{subListener: newMux(nil).subs[muxRaft], stop: stop}
	type res struct {
		c   net.Conn
		err error
		at  time.Time
	}
	done := make(chan res, 1)
	go func() {
		c, err := layer.Dial(raft.ServerAddress(addr), 5*time.Second)
		done <- res{c, err, time.Now()}
	}()
	time.Sleep(300 * time.Millisecond) // the peer is down for a while
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s reused meanwhile: %v", addr, err)
	}
	defer ln2.Close()
	up := time.Now()
	go func() {
		if c, err := ln2.Accept(); err == nil {
			defer c.Close()
			b := make([]byte, 1)
			_, _ = c.Read(b)
		}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("dial after the peer came back: %v", r.err)
	}
	r.c.Close()
	if d := r.at.Sub(up); d > time.Second {
		t.Fatalf("reconnected %v after the peer came back", d)
	}

	// Still refused at the deadline: the error is returned in time.
	ln2.Close()
	t0 := time.Now()
	if _, err := layer.Dial(raft.ServerAddress(addr), 300*time.Millisecond); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("dial returned after %v, timeout was 300ms", d)
	}
	// Closing the node ends the retries at once.
	close(stop)
	t0 = time.Now()
	if _, err := layer.Dial(raft.ServerAddress(addr), 5*time.Second); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("dial kept retrying %v after close", d)
	}
}
