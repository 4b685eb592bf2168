package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
)

// Internal RPC on the cluster port: a follower forwards writes to the
// leader, asks it to change membership, or asks any node for its status.
// Frames: request = [kind][uint32 length][payload]; response = [uint32
// length][JSON rpcResponse]. Connections are pooled and reused (with
// their buffers).

const (
	rpcApply  byte = 1 // payload: encoded fsm command
	rpcRemove byte = 2 // payload: JSON {"id": ...}
	rpcStatus byte = 3 // payload: none
	rpcLeave  byte = 4 // payload: none; sent by the leader to a node it removed
	// rpcCommitIndex = 5: see freshness.go
	// rpcTouch = 6: see touchrelay.go
	// rpcApplyMany = 7: see combine.go
)

const maxFrame = 256 << 20

// rpcResponse is the answer to every RPC. A command-level failure is Code
// (fsm.Code) with its message in Err; nodes of older versions sent only
// Err, which is still decoded (fsm.LegacyCode), and read only Err, which is
// why the message keeps that name.
type rpcResponse struct {
	Index     uint64   `json:"index,omitempty"`
	IDs       []int64  `json:"ids,omitempty"`
	N         int      `json:"n,omitempty"`
	Code      fsm.Code `json:"code,omitempty"`
	Err       string   `json:"err,omitempty"`  // command-level error message
	Fail      string   `json:"fail,omitempty"` // the RPC itself failed
	NotLeader bool     `json:"not_leader,omitempty"`
	Status    *Status  `json:"status,omitempty"`
	// Many answers rpcApplyMany: one response per command, in order.
	Many []rpcResponse `json:"many,omitempty"`
}

func writeFrame(w *bufio.Writer, kind byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(payload); err != nil {
		return err
	}
	return w.Flush()
}

func readPayload(r *bufio.Reader) ([]byte, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n > maxFrame {
		return nil, fmt.Errorf("rpc frame of %d bytes is too large", n)
	}
	if n <= frameChunk {
		buf := make([]byte, n)
		_, err := io.ReadFull(r, buf)
		return buf, err
	}
	// A big frame grows as its bytes arrive: a 5-byte header claiming
	// 256 MiB must not make the node allocate 256 MiB up front.
	var b bytes.Buffer
	b.Grow(frameChunk)
	if _, err := io.CopyN(&b, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b.Bytes(), nil
}

// frameChunk is the size up to which a frame is allocated at once.
const frameChunk = 1 << 20

// serveRPC answers RPCs on one connection until it closes.
func (n *Node) serveRPC(c net.Conn) {
	defer c.Close()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	for {
		kind, err := r.ReadByte()
		if err != nil {
			return
		}
		payload, err := readPayload(r)
		if err != nil {
			return
		}
		resp := n.handleRPC(kind, payload)
		out, _ := json.Marshal(resp)
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(out)))
		if _, err := w.Write(l[:]); err != nil {
			return
		}
		if _, err := w.Write(out); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

func (n *Node) handleRPC(kind byte, payload []byte) *rpcResponse {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	switch kind {
	case rpcApply:
		return n.applyRPC(ctx, payload)
	case rpcApplyMany:
		if !n.refuseApplyMany.Load() {
			return n.applyManyRPC(ctx, payload)
		}
	case rpcRemove:
		var req struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(payload, &req); err != nil {
			return &rpcResponse{Fail: err.Error()}
		}
		if !n.IsLeader() {
			return &rpcResponse{NotLeader: true}
		}
		if err := n.removeLocal(req.ID); err != nil {
			return &rpcResponse{Fail: err.Error()}
		}
		return &rpcResponse{}
	case rpcStatus:
		st := n.localStatus()
		return &rpcResponse{Status: &st}
	case rpcLeave:
		go n.leaveAsRemoved()
		return &rpcResponse{}
	case rpcCommitIndex:
		return n.commitIndexRPC()
	case rpcTouch:
		return n.touchRPC(payload)
	}
	return &rpcResponse{Fail: fmt.Sprintf("unknown rpc %d", kind)}
}

// rpcClient keeps a pool of connections per peer. Every forwarded write
// holds a connection for its whole round trip, so the pool keeps as many
// idle connections as writes usually run at once: a forward beyond the
// pool dials (and, in a secure cluster, does a TLS handshake) and its
// connection is closed afterwards.
type rpcClient struct {
	mu     sync.Mutex
	idle   map[string][]*rpcConn
	source *net.TCPAddr
	wrap   func(net.Conn) net.Conn
}

const maxIdlePerPeer = 64

// rpcConn is a pooled connection with its buffers (kept across calls).
type rpcConn struct {
	net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func newRPCConn(c net.Conn) *rpcConn {
	return &rpcConn{Conn: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
}

func (p *rpcClient) get(ctx context.Context, addr string, timeout time.Duration) (*rpcConn, bool, error) {
	p.mu.Lock()
	if l := p.idle[addr]; len(l) > 0 {
		c := l[len(l)-1]
		l[len(l)-1] = nil
		p.idle[addr] = l[:len(l)-1]
		p.mu.Unlock()
		return c, true, nil
	}
	p.mu.Unlock()
	c, err := dialServiceContext(ctx, addr, muxRPC, timeout, p.source, p.wrap)
	if err != nil {
		return nil, false, err
	}
	return newRPCConn(c), false, nil
}

func (p *rpcClient) put(addr string, c *rpcConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*rpcConn{}
	}
	if len(p.idle[addr]) >= maxIdlePerPeer {
		c.Close()
		return
	}
	p.idle[addr] = append(p.idle[addr], c)
}

func (p *rpcClient) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.idle {
		for _, c := range l {
			c.Close()
		}
	}
	p.idle = nil
}

// call sends one RPC. A pooled connection that fails is retried once on a
// fresh one: after a peer restarts every pooled connection to it is dead.
// The call ends when ctx does, even if the peer never answers (a stopped
// leader): its connection is then closed.
func (p *rpcClient) call(ctx context.Context, addr string, kind byte, payload []byte) (*rpcResponse, error) {
	for attempt := 0; ; attempt++ {
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(10 * time.Second)
		}
		c, pooled, err := p.get(ctx, addr, time.Until(deadline))
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { _ = c.Close() })
		resp, err := c.roundTrip(deadline, kind, payload)
		if !stop() {
			// ctx ended during the call, which closed the connection
			c.Close()
			if err != nil {
				return nil, errors.Join(ctx.Err(), err)
			}
			return resp, nil
		}
		if err == nil {
			p.put(addr, c)
			return resp, nil
		}
		c.Close()
		if !pooled || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// roundTrip sends one RPC on a connection of its own.
func roundTrip(c net.Conn, deadline time.Time, kind byte, payload []byte) (*rpcResponse, error) {
	return newRPCConn(c).roundTrip(deadline, kind, payload)
}

func (c *rpcConn) roundTrip(deadline time.Time, kind byte, payload []byte) (*rpcResponse, error) {
	_ = c.SetDeadline(deadline)
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if err := writeFrame(c.w, kind, payload); err != nil {
		return nil, err
	}
	data, err := readPayload(c.r)
	if err != nil {
		return nil, err
	}
	var resp rpcResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// applyRPC answers rpcApply: one forwarded command (rpcApplyMany:
// applyManyRPC).
func (n *Node) applyRPC(ctx context.Context, payload []byte) *rpcResponse {
	if !n.IsLeader() {
		return &rpcResponse{NotLeader: true}
	}
	n.metrics.forwardedIn.Inc()
	res, index, err := n.applyLocal(ctx, payload)
	if err != nil {
		r := errorResponse(err)
		return &r
	}
	r := resultResponse(res, index)
	return &r
}

// errorResponse is the answer to a forwarded command that was not applied.
func errorResponse(err error) rpcResponse {
	if errors.Is(err, ErrNotLeader) {
		return rpcResponse{NotLeader: true}
	}
	return rpcResponse{Fail: err.Error()}
}

// resultResponse is the answer to a forwarded command raft applied (or
// the leader refused: index 0).
func resultResponse(res *fsm.Result, index uint64) rpcResponse {
	out := rpcResponse{Index: index, IDs: res.IDs, N: res.N, Code: res.Code, Err: res.Message}
	if res.Code != fsm.CodeOK && out.Err == "" {
		out.Err = res.Code.String()
	}
	return out
}

// resultFromRPC rebuilds an fsm.Result (an answer without a code comes
// from an older leader: its message is classified the old way).
func resultFromRPC(r *rpcResponse) *fsm.Result {
	res := &fsm.Result{IDs: r.IDs, N: r.N, Code: r.Code, Message: r.Err}
	if res.Code == fsm.CodeOK && r.Err != "" {
		res.Code = fsm.LegacyCode(r.Err)
	}
	return res
}
