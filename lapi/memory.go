package lapi

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// After a storm of startup streams the encodings it shared are garbage,
// but the Go runtime hands freed pages back to the OS only slowly (its
// background scavenger), so RSS would stay near the storm's peak for
// minutes. The scavenger policy: once the last shared encoding is
// released, and at least scavengeMin bytes were released since the
// previous scavenge, wait scavengeQuiet for the storm to be really over,
// then run debug.FreeOSMemory (a full collection that returns every free
// page), after dropping the chunks kept for reuse (streamcache.go) —
// unless a new encoding started meanwhile, in which case its own
// release will schedule the next one. One forced collection per storm,
// not per request.
const (
	scavengeQuiet = 2 * time.Second
	scavengeMin   = 16 << 20
)

type scavenger struct {
	c     *streamCache
	quiet time.Duration
	min   int64
	free  func()

	mu      sync.Mutex
	pending int64
	timer   *time.Timer
	runs    atomic.Int64
}

func newScavenger(c *streamCache) *scavenger {
	s := &scavenger{c: c, quiet: scavengeQuiet, min: scavengeMin, free: debug.FreeOSMemory}
	c.idle = s.released
	return s
}

// released is told the bytes released when the last live encoding went.
func (s *scavenger) released(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending += n
	if s.pending < s.min {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = time.AfterFunc(s.quiet, s.run)
}

func (s *scavenger) run() {
	s.c.mu.Lock()
	busy := s.c.live > 0
	s.c.mu.Unlock()
	if busy {
		return
	}
	s.mu.Lock()
	s.pending = 0
	s.timer = nil
	s.mu.Unlock()
	s.c.free.clear()
	s.free()
	s.runs.Add(1)
}

// streamCache exports the shared encodings' figures.
func (m *Metrics) streamCache(c *streamCache) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "halapi_stream_shared_bytes",
			Help: "Bytes held by shared startup stream encodings (raw and gzip)."},
			func() float64 { return float64(c.held.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "halapi_stream_encodings_total",
			Help: "Startup stream answers encoded."},
			func() float64 { return float64(c.builds.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "halapi_stream_shared_total",
			Help: "Startup stream requests served from an encoding made for another request."},
			func() float64 { return float64(c.joins.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "halapi_stream_encodings_queued",
			Help: "Startup stream encodings waiting for a slot."},
			func() float64 { return float64(c.waiting.Load()) }),
	)
}

// The same policy after big applies. A CAPI blocklist, an import or an
// installed snapshot leaves its decoded entries and the replaced B-tree
// nodes as garbage, and the runtime would keep those pages for minutes:
// a node that pulled 1,000,000 decisions held ~150 MiB of idle heap. Once
// at least churnMin bytes of entries were applied since the last scavenge
// and the apply rate has stayed under churnQuietRate for churnQuiet (the
// import is over; steady small writes such as the Touch entries do not
// count), the node runs the same debug.FreeOSMemory, unless a shared
// stream encoding is live (its release schedules one anyway).
const (
	churnMin       = 64 << 20
	churnQuiet     = 2 * time.Second
	churnQuietRate = 1 << 20 // bytes per second
	churnTick      = time.Second
)

type churnScavenger struct {
	churn func() uint64 // fsm.FSM.Churn
	busy  func() bool   // a shared encoding is live
	free  func()

	last, prev uint64    // churn at the last scavenge, at the last tick
	busySince  time.Time // the last tick that saw churnQuietRate or more
	prevAt     time.Time
	runs       atomic.Int64
}

func (s *Server) newChurnScavenger() *churnScavenger {
	return &churnScavenger{churn: s.fsm.Churn, free: s.scav.free, busy: func() bool {
		s.startups.mu.Lock()
		defer s.startups.mu.Unlock()
		return s.startups.live > 0
	}}
}

// tick looks at the churn once (every churnTick).
func (c *churnScavenger) tick(now time.Time) {
	v := c.churn()
	if c.prevAt.IsZero() {
		c.last, c.prev, c.prevAt, c.busySince = v, v, now, now
		return
	}
	if secs := now.Sub(c.prevAt).Seconds(); secs > 0 && float64(v-c.prev)/secs >= churnQuietRate {
		c.busySince = now
	}
	c.prev, c.prevAt = v, now
	if v-c.last < churnMin || now.Sub(c.busySince) < churnQuiet || c.busy() {
		return
	}
	c.last = v
	c.free()
	c.runs.Add(1)
}

func (c *churnScavenger) run(ctx context.Context) {
	t := time.NewTicker(churnTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c.tick(now)
		}
	}
}
