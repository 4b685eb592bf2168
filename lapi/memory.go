package lapi

import (
	"runtime/debug"
	"runtime/metrics"
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
// not per request. Nor in the middle of bulk work: if the process
// allocated more than scavengeQuietRate per second during the wait (a
// pull or an import applies at ~1 KB per decision, a restore faster),
// the wait starts again; the node's idle trimmer (cmd/halapi/memtrim.go)
// returns the heap once that work is over. The bar is above what steady
// polling allocates (10,000 bouncers every 10 s: a few MB/s), so a storm
// followed by the bouncers' regular polls is still scavenged.
const (
	scavengeQuiet     = 2 * time.Second
	scavengeMin       = 16 << 20
	scavengeQuietRate = 8 << 20 // bytes allocated per second
)

type scavenger struct {
	c     *streamCache
	quiet time.Duration
	min   int64
	free  func()
	// allocs is the process's cumulative allocated bytes (nil: any
	// allocation rate counts as quiet).
	allocs func() uint64

	mu      sync.Mutex
	pending int64
	timer   *time.Timer
	mark    uint64 // allocs when the wait started
	runs    atomic.Int64
}

func newScavenger(c *streamCache) *scavenger {
	s := &scavenger{c: c, quiet: scavengeQuiet, min: scavengeMin, free: debug.FreeOSMemory, allocs: heapAllocs}
	c.idle = s.released
	return s
}

// heapAllocs is the bytes allocated on the heap since the process started.
func heapAllocs() uint64 {
	m := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(m)
	if m[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return m[0].Value.Uint64()
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
	s.wait()
}

// wait (s.mu held) schedules run after s.quiet.
func (s *scavenger) wait() {
	if s.allocs != nil {
		s.mark = s.allocs()
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
	if s.allocs != nil && float64(s.allocs()-s.mark) > scavengeQuietRate*s.quiet.Seconds() {
		s.wait() // other work is going on: not now
		s.mu.Unlock()
		return
	}
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
