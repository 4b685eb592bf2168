// Package testutil holds the helpers the unit tests of several packages
// share: loopback ports that no two servers of one test binary share (from
// internal/testharness's allocator) and a poll with a deadline instead of a
// sleep.
package testutil

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/halapi/halapi/internal/testharness"
)

// FreeAddr is a 127.0.0.1:port free for TCP that no other call of this
// test binary got.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := testharness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreePort is FreeAddr's port.
func FreePort(t testing.TB) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(FreeAddr(t))
	port, _ := strconv.Atoi(p)
	return port
}

// FreeGossipAddr is a 127.0.0.1:port free for TCP and UDP (memberlist uses
// both) that no other call of this test binary got.
func FreeGossipAddr(t testing.TB) string {
	t.Helper()
	addr, err := testharness.FreeGossipAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// WaitFor polls cond until it holds and fails the test if it does not
// within timeout. The first polls come quickly (1 ms), later ones every
// 20 ms at most, so a condition that holds soon costs no fixed sleep and
// one that takes long does not spin.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(timeout, cond) {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// Eventually polls cond as WaitFor does and reports whether it held within
// timeout.
func Eventually(timeout time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	every := time.Millisecond
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-time.After(every):
		}
		every = min(2*every, 20*time.Millisecond)
	}
	return true
}
