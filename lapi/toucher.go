package lapi

import (
	"context"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
)

// toucher coalesces the writes that reads would otherwise cause (machine
// heartbeats, bouncer last_pull and stream cursors) into one Touch command
// per interval. Until it is written, the node's own latest values are kept
// here and override the replicated ones.
type toucher struct {
	s        *Server
	mu       sync.Mutex
	machines map[string]int64
	bouncers map[string]fsm.StreamCursor
	// served remembers the latest cursor served per bouncer on this node
	// (kept after flushing, so a pull right after a flush uses it).
	served map[string]fsm.StreamCursor
}

func newToucher(s *Server) *toucher {
	return &toucher{s: s, machines: map[string]int64{}, bouncers: map[string]fsm.StreamCursor{}, served: map[string]fsm.StreamCursor{}}
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
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			t.flush(fctx)
			cancel()
			return
		case <-tk.C:
			t.flush(ctx)
		}
	}
}

// flush writes pending touches; on failure they are kept for next time.
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
		body.Bouncers = append(body.Bouncers, fsm.BouncerTouch{Name: name, LastPull: c.LastPull, Cursor: c.Index})
	}
	t.machines = map[string]int64{}
	t.bouncers = map[string]fsm.StreamCursor{}
	t.mu.Unlock()
	if _, err := t.s.apply(ctx, fsm.CmdTouch, body); err != nil {
		t.s.log.Debug("touch write deferred", "err", err)
		for _, m := range body.Machines {
			t.machine(m.ID, m.LastHeartbeat)
		}
		t.mu.Lock()
		for _, b := range body.Bouncers {
			old := t.bouncers[b.Name]
			t.bouncers[b.Name] = fsm.StreamCursor{Index: max(old.Index, b.Cursor), LastPull: max(old.LastPull, b.LastPull)}
		}
		t.mu.Unlock()
	}
}
