package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/halapi/halapi/cluster"
)

// Live updates: one watcher per console, running while at least one
// browser listens, wakes on every index the FSM applies (fsm.WaitForIndex:
// no polling of the state) and, at most once a second when nothing is
// applied, reads the cluster status for a leader change (an election
// applies nothing to the FSM). Events are coalesced to at most one per
// coalesce interval, and each stream holds only the latest one: a slow
// browser skips intermediate states, never blocks the watcher.

const coalesce = 250 * time.Millisecond

// Event is what /ui/events sends (event "update", JSON data).
type Event struct {
	Applied uint64 `json:"applied"`
	Commit  uint64 `json:"commit"`
	Leader  string `json:"leader"`
	Term    uint64 `json:"term"`
	State   string `json:"state"`
}

type hub struct {
	c       *Console
	max     int
	mu      sync.Mutex
	clients map[chan Event]struct{}
	running bool
}

func newHub(c *Console, max int) *hub {
	return &hub{c: c, max: max, clients: map[chan Event]struct{}{}}
}

func (h *hub) subscribe() (chan Event, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.clients) >= h.max {
		return nil, false
	}
	ch := make(chan Event, 1)
	h.clients[ch] = struct{}{}
	if !h.running {
		h.running = true
		go h.watch()
	}
	return ch, true
}

func (h *hub) unsubscribe(ch chan Event) {
	h.mu.Lock()
	delete(h.clients, ch)
	h.mu.Unlock()
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

func (h *hub) isRunning() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.running
}

// broadcast hands ev to every stream, replacing an unsent older event.
func (h *hub) broadcast(ev Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.clients {
		select {
		case <-ch:
		default:
		}
		ch <- ev
	}
}

func (h *hub) watch() {
	var last Event
	first := true
	for {
		h.mu.Lock()
		if len(h.clients) == 0 {
			h.running = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := h.c.cfg.FSM.WaitForIndex(ctx, last.Applied+1)
		cancel()
		ev := h.c.event()
		if first || ev != last {
			h.broadcast(ev)
			first = false
		}
		last = ev
		if err == nil {
			time.Sleep(coalesce) // production throttle: at most one event per interval
		}
	}
}

// event reads the node's status (local indexes, leader, term) and notes
// an election when the leader or term changed.
func (c *Console) event() Event {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := c.status(ctx)
	ev := Event{Applied: c.cfg.FSM.AppliedIndex()}
	if err == nil {
		ev.Applied = max(ev.Applied, st.AppliedIndex)
		ev.Commit, ev.Leader, ev.Term, ev.State = st.CommitIndex, st.Leader, st.Term, st.State
	}
	return ev
}

// status is the cluster status (the admin route GET /status).
func (c *Console) status(ctx context.Context) (cluster.Status, error) {
	var st cluster.Status
	err := c.call(ctx, http.MethodGet, "/status", nil, nil, &st)
	if err == nil {
		c.noteElection(st.Leader, st.Term)
	}
	return st, err
}

func (c *Console) noteElection(leader string, term uint64) {
	c.elMu.Lock()
	defer c.elMu.Unlock()
	if c.seenTerm != 0 && (term != c.seenTerm || leader != c.seenLead) && leader != "" {
		c.election = &electionSeen{Term: term, Leader: leader, At: c.cfg.Now()}
	}
	if leader != "" {
		c.seenTerm, c.seenLead = term, leader
	}
}

func (c *Console) lastElection() *electionSeen {
	c.elMu.Lock()
	defer c.elMu.Unlock()
	return c.election
}

// events is GET /ui/events: server-sent events for a signed-in browser
// (401 otherwise), bounded in number (503 beyond MaxEventClients), ended
// with the session (expiry or sign-out).
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	s := c.sessionOf(r)
	if s == nil {
		c.plainError(w, http.StatusUnauthorized, "sign in first")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		c.plainError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	ch, ok := c.hub.subscribe()
	if !ok {
		w.Header().Set("Retry-After", "30")
		c.plainError(w, http.StatusServiceUnavailable, "too many live views open on this node")
		return
	}
	defer c.hub.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, "retry: 2000\n\n")
	// the current state at once: the watcher only sends changes
	if b, err := json.Marshal(c.event()); err == nil {
		_, _ = fmt.Fprintf(w, "event: update\ndata: %s\n\n", b)
	}
	fl.Flush()
	end := time.NewTimer(time.Until(s.expires))
	defer end.Stop()
	ping := time.NewTicker(25 * time.Second)
	defer ping.Stop()
	ck, _ := r.Cookie(CookieName)
	for {
		select {
		case ev := <-ch:
			if c.sessions.get(ck.Value) == nil { // signed out meanwhile
				return
			}
			b, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "event: update\ndata: %s\n\n", b); err != nil {
				return
			}
			fl.Flush()
		case <-ping.C:
			if c.sessions.get(ck.Value) == nil {
				return
			}
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
			fl.Flush()
		case <-end.C:
			return
		case <-r.Context().Done():
			return
		}
	}
}
