package cluster

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A peer that accepts connections and never answers (a stopped process:
// its kernel completes the handshake) must not hold an RPC past the
// caller's cancellation: the forward to a hung leader is abandoned this
// way when a new leader is elected (vialeader.go).
func TestRPCCallEndsWhenCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn // accepted, never read
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	defer func() {
		ln.Close()
		<-served
		for _, c := range held {
			c.Close()
		}
	}()

	var p rpcClient
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := p.call(ctx, ln.Addr().String(), rpcStatus, nil)
		done <- err
	}()
	select {
	case <-done:
		t.Fatal("the call returned before it was cancelled")
	case <-time.After(200 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the call ended %v after it started", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the call was still running 2 s after its cancellation")
	}
	if len(p.idle) != 0 {
		t.Fatal("a cancelled call's connection went back to the pool")
	}
}
