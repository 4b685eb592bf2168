package lapi

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// toucher coalesces the writes that reads would otherwise cause (machine
// heartbeats, bouncer last_pull and stream cursors): no read ever writes to
// raft (DESIGN invariant 4). Once per interval, a follower relays what it
// gathered to the leader (no raft write), and the leader writes what it
// gathered itself and what was relayed to it in one Touch command: one raft
// entry per interval for the whole cluster, whatever the number of nodes and
// bouncers. Until they are written, the node's own latest values are kept
// here and override the replicated ones (served), so a bouncer polling the
// same node never goes back; one that moves to another node may get a
// cursor up to a couple of intervals old, which only repeats decisions it
// already has.
type toucher struct {
	s        *Server
	mu       sync.Mutex
	machines map[string]int64
	bouncers map[string]fsm.StreamCursor
	// served remembers the latest cursor served per bouncer on this node
	// (kept after flushing, so a pull right after a flush uses it).
	served map[string]fsm.StreamCursor
	// nodes holds the node that served each pending bouncer's newest
	// pull (this node's ID, or the relaying node's).
	nodes map[string]string
}

// supporter is a cluster that knows which commands every voter applies
// (cluster.Node).
type supporter interface {
	Supports(fsm.CmdType) bool
}

// touchRelay is a cluster that gathers touches on its leader
// (cluster.Node).
type touchRelay interface {
	RelayTouches(ctx context.Context, t fsm.Touch) error
	OnTouches(fn func(fsm.Touch))
}

func newToucher(s *Server) *toucher {
	t := &toucher{s: s, machines: map[string]int64{}, bouncers: map[string]fsm.StreamCursor{}, served: map[string]fsm.StreamCursor{}, nodes: map[string]string{}}
	if r, ok := s.cluster.(touchRelay); ok {
		r.OnTouches(t.gather)
	}
	return t
}

// gather takes, on the leader, touches a follower relayed: they are written
// with the next Touch command.
func (t *toucher) gather(body fsm.Touch) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.requeue(body)
}

// requeue merges touches back into the pending ones (t.mu held).
func (t *toucher) requeue(body fsm.Touch) {
	for _, m := range body.Machines {
		if m.LastHeartbeat > t.machines[m.ID] {
			t.machines[m.ID] = m.LastHeartbeat
		}
	}
	for _, b := range body.Bouncers {
		old := t.bouncers[b.Name]
		if b.LastPull > old.LastPull || t.nodes[b.Name] == "" {
			t.nodes[b.Name] = b.Node
		}
		t.bouncers[b.Name] = fsm.StreamCursor{Index: max(old.Index, b.Cursor), LastPull: max(old.LastPull, b.LastPull)}
	}
}

func (t *toucher) machine(id string, at int64) {
	t.mu.Lock()
	if at > t.machines[id] {
		t.machines[id] = at
	}
	t.mu.Unlock()
}

func (t *toucher) bouncer(name string, c fsm.StreamCursor) {
	t.mu.Lock()
	old := t.bouncers[name]
	if c.LastPull > old.LastPull || t.nodes[name] == "" {
		t.nodes[name] = t.s.cfg.NodeID
	}
	t.bouncers[name] = fsm.StreamCursor{Index: max(old.Index, c.Index), LastPull: max(old.LastPull, c.LastPull)}
	sv := t.served[name]
	t.served[name] = fsm.StreamCursor{Index: max(sv.Index, c.Index), LastPull: max(sv.LastPull, c.LastPull)}
	t.mu.Unlock()
}

// cursor returns the newest known cursor of a bouncer: the replicated one
// or the one this node served last, whichever is further.
func (t *toucher) cursor(b *fsm.Bouncer) fsm.StreamCursor {
	c := fsm.StreamCursor{Index: b.Cursor, LastPull: b.LastPull}
	t.mu.Lock()
	if sv, ok := t.served[b.Name]; ok {
		c.Index = max(c.Index, sv.Index)
		c.LastPull = max(c.LastPull, sv.LastPull)
	}
	t.mu.Unlock()
	return c
}

func (t *toucher) run(ctx context.Context) {
	every := t.s.cfg.TouchEvery
	if every <= 0 {
		every = time.Second
	}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for ticks := 1; ; ticks++ {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			t.flush(fctx)
			cancel()
			return
		case <-tk.C:
			t.flush(ctx)
			if ticks%pruneEvery == 0 {
				t.prune()
			}
		}
	}
}

// pruneEvery: served is pruned every that many intervals.
const pruneEvery = 10

// prune forgets the served cursors the replicated state has caught up
// with, and those of bouncers that no longer exist: served then holds the
// bouncers that polled this node in the last few intervals, not every
// bouncer that ever did (shared keys seen from new addresses keep creating
// bouncers).
func (t *toucher) prune() {
	type entry struct {
		name string
		c    fsm.StreamCursor
	}
	t.mu.Lock()
	all := make([]entry, 0, len(t.served))
	for name, c := range t.served {
		all = append(all, entry{name, c})
	}
	t.mu.Unlock()
	var drop []entry
	for _, e := range all {
		b := t.s.fsm.Bouncer(e.name)
		if b == nil || (b.Cursor >= e.c.Index && b.LastPull >= e.c.LastPull) {
			drop = append(drop, e)
		}
	}
	if len(drop) == 0 {
		return
	}
	t.mu.Lock()
	for _, e := range drop {
		if t.served[e.name] == e.c { // not served again meanwhile
			delete(t.served, e.name)
		}
	}
	t.mu.Unlock()
}

// flush writes pending touches (the leader) or relays them to the leader
// (a follower); on failure they are kept for next time.
func (t *toucher) flush(ctx context.Context) {
	t.mu.Lock()
	if len(t.machines) == 0 && len(t.bouncers) == 0 {
		t.mu.Unlock()
		return
	}
	var body fsm.Touch
	for id, at := range t.machines {
		body.Machines = append(body.Machines, fsm.MachineTouch{ID: id, LastHeartbeat: at})
	}
	for name, c := range t.bouncers {
		body.Bouncers = append(body.Bouncers, fsm.BouncerTouch{Name: name, LastPull: c.LastPull, Cursor: c.Index, Node: t.nodes[name]})
	}
	t.machines = map[string]int64{}
	t.bouncers = map[string]fsm.StreamCursor{}
	t.nodes = map[string]string{}
	t.mu.Unlock()
	// The node field is written only once every voter knows it: an older
	// node would store a different bouncer record.
	if sp, ok := t.s.cluster.(supporter); !ok || !sp.Supports(fsm.CmdAuditAppend) {
		for i := range body.Bouncers {
			body.Bouncers[i].Node = ""
		}
	}
	var err error
	if r, ok := t.s.cluster.(touchRelay); ok && !t.s.cluster.IsLeader() {
		err = r.RelayTouches(ctx, body)
		if errors.Is(err, cluster.ErrRelayUnsupported) {
			// An older leader: write them ourselves.
			_, err = t.s.apply(ctx, fsm.CmdTouch, body)
		}
	} else {
		_, err = t.s.apply(ctx, fsm.CmdTouch, body)
	}
	if err != nil {
		t.s.log.Debug("touch write deferred", "err", err)
		t.mu.Lock()
		t.requeue(body)
		t.mu.Unlock()
	}
}
