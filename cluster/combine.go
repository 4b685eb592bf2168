package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
)

// Write combining. A leader groups into one raft batch the entries queued
// while its raft loop waits for a CPU; one that only receives forwards has
// a CPU free and sends each entry on its own, so writes through a follower
// cost every node more batches (a log commit, an AppendEntries round, a
// publish of the state each: 2.4 entries per batch through a follower
// against 4.1 through the leader in the cluster bench). So a follower keeps
// at most one forward in flight per leader: the forwards that arrive
// meanwhile wait, and go together in the next RPC (rpcApplyMany), which
// the leader appends back to back so they reach raft together. A write
// that is alone goes at once, as before.
//
// Each write keeps its own request ID, context and answer: one that gives
// up (its context ends, the leader changed) stops waiting and is retried
// by viaLeader under the same ID, whatever happens to the RPC it was in.

const (
	// rpcApplyMany applies several encoded fsm commands; payload: count
	// (uint16), then per command its length (uint32) and bytes. Answer:
	// Many, one rpcResponse per command in order (or NotLeader). An older
	// leader answers "unknown rpc": the follower then forwards one by one.
	rpcApplyMany byte = 7

	// maxCombined bounds the commands in one rpcApplyMany, and
	// maxCombinedBytes their size (a command alone may be bigger: it then
	// goes alone).
	maxCombined      = 64
	maxCombinedBytes = 4 << 20

	// combineMax is the largest write that waits in the queue: a bigger
	// one (a list import through a follower) goes at once on its own RPC,
	// so that the alerts behind it do not wait for its apply.
	combineMax = 256 << 10
)

type fwdResult struct {
	resp *rpcResponse
	err  error
}

type fwdReq struct {
	ctx  context.Context
	data []byte
	res  chan fwdResult // buffered: the sender never blocks
}

type fwdQueue struct {
	running bool // a goroutine is sending this queue
	pending []*fwdReq
	single  bool // the leader at this address lacks rpcApplyMany
}

type combiner struct {
	mu sync.Mutex
	qs map[string]*fwdQueue
}

// forwardApply forwards one encoded command to the leader at addr.
func (n *Node) forwardApply(ctx context.Context, addr string, data []byte) (*rpcResponse, error) {
	c := &n.combine
	r := &fwdReq{ctx: ctx, data: data, res: make(chan fwdResult, 1)}
	c.mu.Lock()
	if c.qs == nil {
		c.qs = map[string]*fwdQueue{}
	}
	q := c.qs[addr]
	if q == nil {
		q = &fwdQueue{}
		c.qs[addr] = q
	}
	// q.single stays for the process's life: a leader upgraded in place
	// at the same address gets one RPC per write until this node restarts
	if q.single || len(data) > combineMax {
		c.mu.Unlock()
		n.metrics.forwardRPCs.Inc()
		return n.rpc.call(ctx, addr, rpcApply, data)
	}
	q.pending = append(q.pending, r)
	if !q.running {
		q.running = true
		go n.sendQueue(addr, q)
	}
	c.mu.Unlock()
	select {
	case x := <-r.res:
		return x.resp, x.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sendQueue sends q's waiting forwards, as many as it holds per RPC, until
// none is left.
func (n *Node) sendQueue(addr string, q *fwdQueue) {
	c := &n.combine
	for {
		c.mu.Lock()
		k, size := 0, 0
		for k < len(q.pending) && k < maxCombined && (k == 0 || size+len(q.pending[k].data) <= maxCombinedBytes) {
			size += len(q.pending[k].data)
			k++
		}
		batch := q.pending[:k:k]
		q.pending = q.pending[k:]
		if k == 0 {
			q.running = false
			q.pending = nil
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		live := make([]*fwdReq, 0, len(batch))
		for _, r := range batch {
			if err := r.ctx.Err(); err != nil {
				r.res <- fwdResult{err: err}
				continue
			}
			live = append(live, r)
		}
		if len(live) > 0 {
			n.metrics.forwardRPCs.Inc()
		}
		switch len(live) {
		case 0:
		case 1:
			resp, err := n.rpc.call(live[0].ctx, addr, rpcApply, live[0].data)
			live[0].res <- fwdResult{resp, err}
		default:
			n.sendMany(addr, q, live)
		}
	}
}

// sendMany sends several forwards in one rpcApplyMany and hands each its
// answer. The RPC runs until the last of their deadlines: a write that
// gives up earlier has stopped waiting already.
func (n *Node) sendMany(addr string, q *fwdQueue, rs []*fwdReq) {
	var deadline time.Time
	for _, r := range rs {
		if dl, ok := r.ctx.Deadline(); ok && dl.After(deadline) {
			deadline = dl
		}
	}
	if deadline.IsZero() {
		deadline = time.Now().Add(10 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	cmds := make([][]byte, len(rs))
	for i, r := range rs {
		cmds[i] = r.data
	}
	resp, err := n.rpc.call(ctx, addr, rpcApplyMany, encodeMany(cmds))
	switch {
	case err == nil && strings.HasPrefix(resp.Fail, "unknown rpc"):
		// an older leader: from now on one RPC per write to it
		n.combine.mu.Lock()
		q.single = true
		n.combine.mu.Unlock()
		for _, r := range rs {
			go func() {
				resp, err := n.rpc.call(r.ctx, addr, rpcApply, r.data)
				r.res <- fwdResult{resp, err}
			}()
		}
		return
	case err == nil && resp.NotLeader:
		for _, r := range rs {
			r.res <- fwdResult{resp: &rpcResponse{NotLeader: true}}
		}
		return
	case err == nil && resp.Fail == "" && len(resp.Many) != len(rs):
		err = fmt.Errorf("leader answered %d of %d combined writes", len(resp.Many), len(rs))
	}
	for i, r := range rs {
		switch {
		case err != nil:
			r.res <- fwdResult{err: err}
		case resp.Fail != "":
			r.res <- fwdResult{resp: &rpcResponse{Fail: resp.Fail}}
		default:
			r.res <- fwdResult{resp: &resp.Many[i]}
		}
	}
}

// encodeMany is rpcApplyMany's payload.
func encodeMany(cmds [][]byte) []byte {
	size := 2
	for _, c := range cmds {
		size += 4 + len(c)
	}
	b := make([]byte, 2, size)
	binary.BigEndian.PutUint16(b, uint16(len(cmds)))
	for _, c := range cmds {
		b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	return b
}

var errBadMany = errors.New("malformed combined writes")

// decodeMany splits rpcApplyMany's payload (sub-slices of b).
func decodeMany(b []byte) ([][]byte, error) {
	if len(b) < 2 {
		return nil, errBadMany
	}
	k := int(binary.BigEndian.Uint16(b))
	if k == 0 || k > maxCombined {
		return nil, fmt.Errorf("%w: %d commands", errBadMany, k)
	}
	b = b[2:]
	out := make([][]byte, 0, k)
	for range k {
		if len(b) < 4 {
			return nil, errBadMany
		}
		l := binary.BigEndian.Uint32(b)
		b = b[4:]
		if uint64(l) > uint64(len(b)) {
			return nil, errBadMany
		}
		out = append(out, b[:l:l])
		b = b[l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadMany, len(b))
	}
	return out, nil
}

// applyManyRPC answers rpcApplyMany: each command is decoded and
// validated as rpcApply would (in parallel), then the valid ones are handed
// to raft back to back, so that they leave in one batch, and their
// results read in order.
func (n *Node) applyManyRPC(ctx context.Context, payload []byte) *rpcResponse {
	if !n.IsLeader() {
		return &rpcResponse{NotLeader: true}
	}
	cmds, err := decodeMany(payload)
	if err != nil {
		return &rpcResponse{Fail: err.Error()}
	}
	decoded := make([]fsm.Command, len(cmds))
	errs := make([]error, len(cmds))
	var wg sync.WaitGroup
	for i, c := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			decoded[i], errs[i] = fsm.DecodeValid(c)
		}()
	}
	wg.Wait()
	out := make([]rpcResponse, len(cmds))
	pending := make([]*pendingAppend, len(cmds))
	for i, c := range cmds {
		n.metrics.forwardedIn.Inc()
		if errs[i] != nil {
			out[i] = resultResponse(n.refuseForwarded(errs[i]), 0)
			continue
		}
		p, err := n.startAppend(ctx, c, &decoded[i])
		if err != nil {
			out[i] = errorResponse(err)
			continue
		}
		pending[i] = p
	}
	for i, p := range pending {
		if p == nil {
			continue
		}
		res, index, err := n.finishAppend(ctx, p)
		if err != nil {
			out[i] = errorResponse(err)
			continue
		}
		out[i] = resultResponse(res, index)
	}
	return &rpcResponse{Many: out}
}
