package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// The write path: Apply validates a command, gates types some voter does
// not advertise, and hands the encoded entry to the leader (viaLeader):
// appended here when this node leads, forwarded otherwise (the leader
// decodes and validates what it is sent, applyLocal). Either way Apply
// returns once this node's FSM has applied the entry (read-your-writes).

// Apply submits a command through the leader (forwarding it when this node
// follows), waits until this node has applied it, and returns its result.
func (n *Node) Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error) {
	start := time.Now()
	// One request ID for every attempt: an attempt whose answer was lost
	// (leader killed after committing, forwarding connection cut, leader
	// replaced while it hung) is not applied twice when it is retried, and
	// the retry gets its result.
	if c.ID == "" {
		var id [16]byte
		_, _ = rand.Read(id[:])
		c.ID = hex.EncodeToString(id[:])
	}
	if err := n.checkSupported(c.Type); err != nil {
		return nil, err
	}
	// Refused here already (the leader checks again what it is sent).
	if err := c.Validate(); err != nil {
		return invalidResult(err), nil
	}
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	// Decoded here, on the caller's goroutine, when this node leads: the
	// FSM's single apply goroutine then skips the decode (Predecoded), so
	// concurrent writers decode in parallel. Decoding the encoded bytes
	// (not using c) gives exactly what every follower decodes.
	var decoded *fsm.Command
	var res *fsm.Result
	var hinted chan func() // the forget of a HintForwarded, once made
	defer func() {
		if hinted != nil {
			(<-hinted)()
		}
	}()
	err = n.viaLeader(ctx, func(ctx context.Context) error {
		if decoded == nil {
			if dc, err := fsm.Decode(data); err == nil {
				decoded = &dc
			}
		}
		r, _, err := n.appendLocal(ctx, data, decoded)
		res = r
		return err
	}, func(fctx context.Context, addr string) error {
		if hinted == nil && len(data) >= hintMin && len(data) <= combineMax {
			// decoded while the leader handles it: this node's apply,
			// which the write waits for, then skips the decode
			hinted = make(chan func(), 1)
			go func() { hinted <- n.FSM.HintForwarded(data) }()
		}
		resp, err := n.forwardApply(fctx, addr, data)
		switch {
		case err != nil:
			n.log.Debug("forwarding to leader failed", "leader", addr, "err", err)
			return ErrNotLeader
		case resp.NotLeader:
			return ErrNotLeader
		case resp.Fail != "":
			return errors.New(resp.Fail)
		}
		n.metrics.forwardedOut.Inc()
		// read-your-writes on this node (under the write's ctx, not the
		// forward's: a leader change now does not undo the write)
		if err := n.FSM.WaitForIndex(ctx, resp.Index); err != nil {
			return fmt.Errorf("write committed but not yet applied here: %w", err)
		}
		res = resultFromRPC(resp)
		return nil
	})
	if err != nil {
		return nil, err
	}
	n.metrics.applyLatency.Observe(time.Since(start).Seconds())
	return res, nil
}

// hintMin is the smallest forwarded write decoded ahead on this node
// (HintForwarded): below it the decode costs less than the goroutine.
const hintMin = 4 << 10

// applyLocal appends an encoded command a peer forwarded. The leader
// decodes and validates it first: nothing undecodable or invalid is ever
// committed (it would be applied by every node, after every restart). A
// refused command gets a CodeInvalid result and index 0.
func (n *Node) applyLocal(ctx context.Context, data []byte) (*fsm.Result, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, ErrNotLeader
	}
	cmd, err := fsm.DecodeValid(data)
	if err != nil {
		return n.refuseForwarded(err), 0, nil
	}
	return n.appendLocal(ctx, data, &cmd)
}

// refuseForwarded is the result of a forwarded command that does not
// decode or validate (logged: a peer sent it).
func (n *Node) refuseForwarded(err error) *fsm.Result {
	n.log.Warn("refused an invalid forwarded command", "err", err)
	return invalidResult(err)
}

func invalidResult(err error) *fsm.Result {
	return &fsm.Result{Code: fsm.CodeOf(err), Message: err.Error()}
}

// appendLocal appends an encoded, validated command on the leader,
// stamping the leader's time, and waits until it is applied here. decoded,
// when the caller already decoded data (forwarded writes), spares the
// local FSM decoding the same bytes again.
func (n *Node) appendLocal(ctx context.Context, data []byte, decoded *fsm.Command) (*fsm.Result, uint64, error) {
	p, err := n.startAppend(ctx, data, decoded)
	if err != nil {
		return nil, 0, err
	}
	return n.finishAppend(ctx, p)
}

// pendingAppend is a command handed to raft whose result is not read yet.
type pendingAppend struct {
	fut    raft.ApplyFuture
	entry  []byte
	hinted bool
}

// startAppend hands a command to raft without waiting (appendLocal's first
// half): commands started back to back reach raft's loop together and
// leave in one batch.
func (n *Node) startAppend(ctx context.Context, data []byte, decoded *fsm.Command) (*pendingAppend, error) {
	if n.raft.State() != raft.Leader {
		return nil, ErrNotLeader
	}
	entry := append([]byte(nil), data...)
	fsm.StampTime(entry, time.Now().UnixNano())
	if decoded != nil {
		n.FSM.Predecoded(entry, *decoded)
	}
	timeout := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d < timeout {
			timeout = d
		}
	}
	n.metrics.appended(entry)
	return &pendingAppend{fut: n.raft.Apply(entry, timeout), entry: entry, hinted: decoded != nil}, nil
}

// finishAppend waits until a started command is applied here.
func (n *Node) finishAppend(ctx context.Context, p *pendingAppend) (*fsm.Result, uint64, error) {
	if p.hinted {
		defer n.FSM.Forget(p.entry)
	}
	fut := p.fut
	if err := n.wait(ctx, fut); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return nil, 0, ErrNotLeader
		}
		return nil, 0, err
	}
	if err := n.FSM.WaitForIndex(ctx, fut.Index()); err != nil {
		return nil, 0, err
	}
	res, _ := fut.Response().(*fsm.Result)
	if res == nil {
		res = &fsm.Result{}
	}
	return res, fut.Index(), nil
}

// errStopping is returned for futures abandoned because the node is closing.
var errStopping = errors.New("node is shutting down")

// wait waits for a raft future, but not past ctx or the node's shutdown:
// with a buffered apply channel, a future queued just before raft shuts
// down is never answered.
func (n *Node) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.stop:
		return errStopping
	case <-ctx.Done():
		return ctx.Err()
	}
}
