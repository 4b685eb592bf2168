package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// Touches (bouncer cursors and last pulls, machine heartbeats) are
// gathered on the leader: a follower relays the ones it coalesced to the
// leader (rpcTouch, no raft write), and the leader writes them with its own
// in its next Touch entry. The cluster then appends one Touch entry per
// interval whatever the number of nodes. Touches relayed to a leader that
// dies before its next write are lost: a stale cursor only makes the
// bouncer's next delta repeat decisions it already has, and the node that
// served the bouncer still knows its newest cursor.

// rpcTouch: payload = an encoded fsm.CmdTouch command; the leader decodes
// and validates it and hands it to its touch sink.
const rpcTouch byte = 6

// ErrRelayUnsupported: the leader does not gather touches (an older
// version, or nothing registered a sink yet); write them directly.
var ErrRelayUnsupported = errors.New("the leader does not gather relayed touches")

// OnTouches registers the function that receives, on the leader, the
// touches followers relay (the LAPI's toucher). Call it once, before
// traffic.
func (n *Node) OnTouches(fn func(fsm.Touch)) {
	n.mu.Lock()
	n.touchSink = fn
	n.mu.Unlock()
}

func (n *Node) sink() func(fsm.Touch) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.touchSink
}

// RelayTouches hands touches to the leader's sink: directly when this node
// leads, over the cluster port otherwise. ErrNotLeader: no leader is
// reachable; ErrRelayUnsupported: the leader does not gather touches.
func (n *Node) RelayTouches(ctx context.Context, t fsm.Touch) error {
	if n.raft.State() == raft.Leader {
		fn := n.sink()
		if fn == nil {
			return ErrRelayUnsupported
		}
		fn(t)
		return nil
	}
	addr, id := n.raft.LeaderWithID()
	if addr == "" || id == raft.ServerID(n.cfg.NodeID) || n.mux == nil {
		return ErrNotLeader
	}
	data, err := fsm.Command{Type: fsm.CmdTouch, Body: t}.Encode()
	if err != nil {
		return err
	}
	resp, err := n.rpc.call(ctx, string(addr), rpcTouch, data)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	case resp.NotLeader:
		return ErrNotLeader
	case strings.HasPrefix(resp.Fail, "unknown rpc"), resp.Fail == errNoSink:
		return ErrRelayUnsupported
	case resp.Fail != "":
		return errors.New(resp.Fail)
	}
	n.metrics.touchesRelayed.Inc()
	return nil
}

const errNoSink = "no touch sink"

// touchRPC is the leader's side of RelayTouches.
func (n *Node) touchRPC(payload []byte) *rpcResponse {
	if !n.IsLeader() {
		return &rpcResponse{NotLeader: true}
	}
	fn := n.sink()
	if fn == nil {
		return &rpcResponse{Fail: errNoSink}
	}
	c, err := fsm.DecodeValid(payload)
	if err != nil {
		return &rpcResponse{Fail: err.Error()}
	}
	if c.Type != fsm.CmdTouch {
		return &rpcResponse{Fail: fmt.Sprintf("touch relay: command type %d is not a touch", c.Type)}
	}
	var t fsm.Touch
	switch b := c.Body.(type) {
	case *fsm.Touch:
		t = *b
	case fsm.Touch:
		t = b
	default:
		return &rpcResponse{Fail: fmt.Sprintf("touch relay: body %T", c.Body)}
	}
	fn(t)
	return &rpcResponse{}
}
