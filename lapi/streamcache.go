package lapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/halapi/halapi/fsm"
)

// Startup stream answers (the whole list) are shared: requests with the
// same filters that arrive while an answer is being encoded, or shortly
// after, copy the same immutable chunks to their sockets instead of each
// encoding the list again. A fleet of bouncers restarting at once thus
// costs about one encoding (and one compression) per distinct filter, and
// memory for one copy of the body rather than one per bouncer.
//
// Freshness: a request joins an encoding only if it is queued (it will
// read the state after the request arrived), or if it started at an
// applied index at least the one the request saw on arrival and is either
// still being encoded or started less than shareWindow ago. So an answer
// never reflects an older state than the request could have got alone
// (read-your-writes holds). Its "duration" fields are at most shareWindow
// longer than if it had been encoded for this request alone — within the
// second they are rounded to — or, when it joins an encoding in progress,
// longer by at most the time that encoding has run, which a new encoding
// for this request would have taken too before its last byte (the
// whole-body encoder's answers were as stale by the time they arrived).
// The bouncer's cursor is set to the encoding's index and time, so its
// next delta repeats rather than misses what changed in between.

// errAbandoned ends a queued encoding whose requests all went away.
var errAbandoned = errors.New("startup stream: every request waiting for this encoding went away")

// sharedEncoding is one startup answer, encoded once. Its chunks are
// immutable once published; readers follow the encoder chunk by chunk.
type sharedEncoding struct {
	c   *streamCache
	key string
	f   *fsm.DecisionFilter

	// under c.mu
	readers   int  // requests (and the compressor) holding it
	started   bool // the encoder has its slot and read the state
	built     bool // the encoder has finished (or given up)
	evicted   bool // no longer joinable
	dropped   bool // chunks released
	gzStarted bool
	minIndex  uint64    // applied index when the encoding started
	at        time.Time // the "now" of the answer
	abandon   chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every publish
	index   uint64        // the index the answer reflects
	raw, gz [][]byte
	rawDone bool
	gzDone  bool
	rawSize int64
	gzSize  int64
	err     error
}

// streamCache holds the shared startup encodings by filter.
type streamCache struct {
	f      *fsm.FSM
	now    func() time.Time
	window time.Duration
	// slots bounds the startup encodings running at once; more wait
	// (queued, bounded by their requests' contexts) instead of failing.
	slots chan struct{}
	// idle is called (outside the lock) when the last encoding was
	// released, with the bytes released since the previous call.
	idle func(released int64)
	// free recycles the chunks of released encodings.
	free chunkFree
	// testHookBuilding, if set, runs in the encoder once it has started.
	testHookBuilding func()

	mu       sync.Mutex
	byKey    map[string]*sharedEncoding
	live     int
	released int64

	held    atomic.Int64 // bytes of encodings not yet released
	builds  atomic.Int64 // encodings made
	joins   atomic.Int64 // requests served from an encoding another started
	waiting atomic.Int64 // encodings queued for a slot
}

// shareWindow is how long after it started an encoding may be reused by
// requests that arrive later (see the freshness rule above).
const shareWindow = time.Second

func newStreamCache(f *fsm.FSM, now func() time.Time, slots int) *streamCache {
	return &streamCache{f: f, now: now, window: shareWindow, slots: make(chan struct{}, max(1, slots)),
		byKey: map[string]*sharedEncoding{}, free: chunkFree{max: freeChunks}}
}

// filterKey identifies the answers a filter gives; requests whose filters
// differ in any way never share.
func filterKey(f *fsm.DecisionFilter) string {
	b, err := json.Marshal(f)
	if err != nil {
		return ""
	}
	return string(b)
}

// acquire returns the encoding a startup request with filter f copies,
// joining a running or recent one when the freshness rule allows, or
// starting a new one. release must follow.
func (c *streamCache) acquire(f *fsm.DecisionFilter) *sharedEncoding {
	key := filterKey(f)
	idx0 := c.f.AppliedIndex()
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.byKey[key]; e != nil && key != "" && !e.evicted &&
		(!e.started || (e.minIndex >= idx0 && (!e.built || now.Sub(e.at) <= c.window))) {
		e.readers++
		c.joins.Add(1)
		return e
	}
	if old := c.byKey[key]; old != nil {
		c.evictLocked(old)
	}
	e := &sharedEncoding{c: c, key: key, f: f, readers: 1, abandon: make(chan struct{}), changed: make(chan struct{})}
	if key != "" {
		c.byKey[key] = e
	} else {
		e.evicted = true
	}
	c.live++
	c.waiting.Add(1)
	go c.build(e)
	return e
}

// release drops a request's hold on e.
func (c *streamCache) release(e *sharedEncoding) {
	c.mu.Lock()
	e.readers--
	if e.readers == 0 && !e.started && !e.built {
		close(e.abandon)
		c.evictLocked(e)
	}
	rel := c.maybeDropLocked(e)
	c.mu.Unlock()
	if rel >= 0 && c.idle != nil {
		c.idle(rel)
	}
}

func (c *streamCache) evictLocked(e *sharedEncoding) {
	if e.evicted {
		return
	}
	e.evicted = true
	if c.byKey[e.key] == e {
		delete(c.byKey, e.key)
	}
}

// maybeDropLocked releases e's chunks once nobody can use them any more.
// It returns the bytes released since the last idle call when this was
// the last live encoding, else -1.
func (c *streamCache) maybeDropLocked(e *sharedEncoding) int64 {
	if e.dropped || !e.evicted || !e.built || e.readers > 0 {
		return -1
	}
	e.dropped = true
	e.mu.Lock()
	n := e.rawSize + e.gzSize
	c.free.put(e.raw)
	c.free.put(e.gz)
	e.raw, e.gz = nil, nil
	e.mu.Unlock()
	c.held.Add(-n)
	c.released += n
	c.live--
	if c.live > 0 {
		return -1
	}
	rel := c.released
	c.released = 0
	return rel
}

func (c *streamCache) build(e *sharedEncoding) {
	select {
	case c.slots <- struct{}{}:
	case <-e.abandon:
		c.waiting.Add(-1)
		c.finish(e, errAbandoned)
		return
	}
	c.waiting.Add(-1)
	defer func() { <-c.slots }()
	c.mu.Lock()
	if e.readers == 0 {
		c.mu.Unlock()
		c.finish(e, errAbandoned)
		return
	}
	e.started = true
	e.minIndex = c.f.AppliedIndex()
	e.at = c.now()
	c.mu.Unlock()
	c.builds.Add(1)
	if c.testHookBuilding != nil {
		c.testHookBuilding()
	}

	c.encodeStartup(e)
	c.finish(e, nil)
}

// freeChunks caps the recycled chunks (4096 x 65 KiB: a little more
// than the raw and gzip bodies of a million decisions).
const freeChunks = 4096

// chunkFree recycles the chunks of released shared encodings: a storm's
// successive encodings (one per filter and second) then reuse memory
// instead of allocating tens of MB each, which would make the collector
// run — and every collection scans the whole state. The scavenger
// empties it once the storm is over, so the memory can go back to the OS.
type chunkFree struct {
	mu   sync.Mutex
	list [][]byte
	max  int
}

func (f *chunkFree) get() []byte {
	f.mu.Lock()
	if n := len(f.list); n > 0 {
		b := f.list[n-1]
		f.list[n-1] = nil
		f.list = f.list[:n-1]
		f.mu.Unlock()
		return b[:0]
	}
	f.mu.Unlock()
	return make([]byte, 0, chunkSize+chunkSlack)
}

func (f *chunkFree) put(bs [][]byte) {
	f.mu.Lock()
	for _, b := range bs {
		if len(f.list) >= f.max {
			break
		}
		if cap(b) == chunkSize+chunkSlack {
			f.list = append(f.list, b)
		}
	}
	f.mu.Unlock()
}

// clear drops every recycled chunk and returns how many bytes they held.
func (f *chunkFree) clear() int64 {
	f.mu.Lock()
	n := int64(len(f.list)) * (chunkSize + chunkSlack)
	f.list = nil
	f.mu.Unlock()
	return n
}

// finish marks the encoder done; the encoding stays joinable for the rest
// of its window. It is marked built before its readers can see the end of
// the body, so a request that follows one just answered never takes it
// for an encoding still in progress.
func (c *streamCache) finish(e *sharedEncoding, err error) {
	c.mu.Lock()
	e.built = true
	if err != nil {
		c.evictLocked(e)
	} else {
		time.AfterFunc(c.window, func() {
			c.mu.Lock()
			c.evictLocked(e)
			rel := c.maybeDropLocked(e)
			c.mu.Unlock()
			if rel >= 0 && c.idle != nil {
				c.idle(rel)
			}
		})
	}
	c.mu.Unlock()
	e.mu.Lock()
	e.rawDone = true
	e.err = err
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
	c.mu.Lock()
	rel := c.maybeDropLocked(e)
	c.mu.Unlock()
	if rel >= 0 && c.idle != nil {
		c.idle(rel)
	}
}

// publish appends a chunk to the raw (or gzip) list and wakes readers.
func (e *sharedEncoding) publish(b []byte, gz bool) {
	e.mu.Lock()
	if gz {
		e.gz = append(e.gz, b)
		e.gzSize += int64(len(b))
	} else {
		e.raw = append(e.raw, b)
		e.rawSize += int64(len(b))
	}
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
	e.c.held.Add(int64(len(b)))
}

// next returns chunk i of the raw or gzip body, waiting for it; io.EOF
// once the body is complete.
func (e *sharedEncoding) next(ctx context.Context, gz bool, i int) ([]byte, error) {
	for {
		e.mu.Lock()
		list, done := e.raw, e.rawDone
		if gz {
			list, done = e.gz, e.gzDone
		}
		if i < len(list) {
			b := list[i]
			e.mu.Unlock()
			return b, nil
		}
		if e.err != nil {
			err := e.err
			e.mu.Unlock()
			return nil, err
		}
		if done {
			e.mu.Unlock()
			return nil, io.EOF
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// size returns the body's length if it is complete.
func (e *sharedEncoding) size(gz bool) (int64, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if gz {
		return e.gzSize, e.gzDone
	}
	return e.rawSize, e.rawDone && e.err == nil
}

// startGzip makes sure the gzip body is being produced: one compressor
// per encoding, following the raw chunks as they are published.
func (c *streamCache) startGzip(e *sharedEncoding) {
	c.mu.Lock()
	start := !e.gzStarted
	if start {
		e.gzStarted = true
		e.readers++
	}
	c.mu.Unlock()
	if start {
		go c.compress(e)
	}
}

// streamStartup answers a startup (whole list) stream request from the
// shared encoding of its filters.
func (s *Server) streamStartup(w http.ResponseWriter, r *http.Request, f *fsm.DecisionFilter, bouncer string) {
	c := s.startups
	e := c.acquire(f)
	defer c.release(e)
	gz := acceptsGzip(r)
	if gz {
		c.startGzip(e)
	}
	ctx := r.Context()
	// The first chunk comes once the encoding has a slot (queued
	// requests wait here, as long as their client does).
	b, err := e.next(ctx, gz, 0)
	if err != nil {
		if ctx.Err() == nil {
			w.Header().Set("Retry-After", "1")
			writeErr(w, http.StatusServiceUnavailable, "startup stream not available: "+err.Error())
		}
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Add("Vary", "Accept-Encoding")
	if gz {
		h.Set("Content-Encoding", "gzip")
	}
	if n, ok := e.size(gz); ok {
		h.Set("Content-Length", strconv.FormatInt(n, 10))
	}
	w.WriteHeader(http.StatusOK)
	g := newStallGuard(w)
	defer g.done()
	for i := 1; ; i++ {
		g.arm()
		if _, err := w.Write(b); err != nil {
			return
		}
		b, err = e.next(ctx, gz, i)
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
	}
	e.mu.Lock()
	index := e.index
	e.mu.Unlock()
	s.touches.bouncer(bouncer, fsm.StreamCursor{Index: index, LastPull: e.at.UnixNano()})
}
