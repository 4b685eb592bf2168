package lapi

import (
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/klauspost/compress/gzip"
)

// Bouncer answers (stream and live decision lists) are encoded into
// chunks of about chunkSize bytes and each chunk is handed on as soon as
// it is full, so no request ever holds its whole body: a per-request
// answer holds one chunk, a shared startup answer (streamcache.go) holds
// its chunks once for every request that copies them.
const chunkSize = 64 << 10

// chunkSlack is room left past chunkSize so one more decision (a few
// hundred bytes, a 64 KiB value at worst) rarely makes a chunk grow.
const chunkSlack = 1 << 10

// writeStall bounds how long one chunk may wait for the client to read:
// a bouncer that stops reading is cut after it, so it cannot pin a
// shared encoding (or its handler) forever. 64 KiB in 30 s is 2 KiB/s.
var writeStall = 30 * time.Second

// stallGuard sets a write deadline before each chunk and clears it when
// the answer is done (the connection may serve further requests).
type stallGuard struct{ rc *http.ResponseController }

func newStallGuard(w http.ResponseWriter) stallGuard {
	return stallGuard{http.NewResponseController(w)}
}

func (g stallGuard) arm()  { _ = g.rc.SetWriteDeadline(time.Now().Add(writeStall)) }
func (g stallGuard) done() { _ = g.rc.SetWriteDeadline(time.Time{}) }

// gzipMinDecisions: answers with fewer decisions than this are sent
// uncompressed even when the client accepts gzip (a few hundred bytes do
// not gain from it, and most delta pulls are that small).
const gzipMinDecisions = 16

// chunkEncoder writes the JSON of a bouncer answer into buf and hands buf
// to sink every time it passes chunkSize. sink returns the buffer to go on
// with (the same one emptied, or a new one) and false to stop (the client
// is gone).
type chunkEncoder struct {
	buf    []byte
	sink   func([]byte) ([]byte, bool)
	failed bool
	fc     fieldCache
	// yield lets other goroutines have the P between chunks (nil:
	// runtime.Gosched; a test counts the calls)
	yield func()
}

func (e *chunkEncoder) spill() {
	if e.hand(); e.failed {
		return
	}
	// A 1M-decision startup answer is ~1 s of encoding: every 64 KB the
	// encoder lets queries queued on its P run (on a one-core node they
	// would otherwise wait for the runtime's 10 ms preemption).
	if e.yield != nil {
		e.yield()
		return
	}
	runtime.Gosched()
}

// hand gives buf to sink.
func (e *chunkEncoder) hand() {
	if e.failed {
		return
	}
	var ok bool
	e.buf, ok = e.sink(e.buf)
	e.failed = !ok
}

// decisions encodes ds as a JSON array, or null when empty (what CrowdSec
// sends and its clients expect).
func (e *chunkEncoder) decisions(ds []*fsm.Decision, now int64, withUUID bool) {
	if len(ds) == 0 {
		e.buf = append(e.buf, "null"...)
		return
	}
	e.buf = append(e.buf, '[')
	e.items(ds, now, withUUID, false)
	e.buf = append(e.buf, ']')
}

// items encodes ds as array elements separated by commas, with a comma
// before the first one when more is set (a continuation of an array).
func (e *chunkEncoder) items(ds []*fsm.Decision, now int64, withUUID, more bool) {
	for i, d := range ds {
		if i > 0 || more {
			e.buf = append(e.buf, ',')
		}
		e.buf = e.fc.appendDecision(e.buf, d, now, withUUID)
		if len(e.buf) >= chunkSize {
			if e.spill(); e.failed {
				return
			}
		}
	}
}

// stream encodes a stream answer: {"deleted":[...],"new":[...]}.
func (e *chunkEncoder) stream(deleted, newD []*fsm.Decision, now int64) {
	e.buf = append(e.buf, `{"deleted":`...)
	e.decisions(deleted, now, true)
	e.buf = append(e.buf, `,"new":`...)
	e.decisions(newD, now, true)
	e.buf = append(e.buf, '}')
}

// finish hands the last partial chunk to sink.
//
// The last chunk is handed over without yielding the P: an answer that
// ends does not hold it long, and a point query (one small chunk) that
// yielded before its handler returned would wait behind every runnable
// goroutine of the node — a bulk apply's included — before its answer
// left (a follower's query p99 during a 1M pull: 21.5 → 18.7 ms, p50
// 0.69 → 0.57 ms, medians of 4 runs each).
func (e *chunkEncoder) finish() bool {
	if len(e.buf) > 0 {
		e.hand()
	}
	return !e.failed
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize+chunkSlack); return &b }}

// gzipPool holds BestSpeed writers: deflate level 1 of klauspost/compress
// compresses this JSON about 6x at several times the speed of the
// standard library's level 1 (docs/design/scale-stream.md has the figures).
var gzipPool = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return zw
}}

// writeStreamed sends a per-request answer (delta stream, live query)
// with a bounded buffer, gzip-compressed when the client accepts it and
// the answer holds at least gzipMinDecisions decisions. It reports
// whether the whole body was handed to the connection.
func writeStreamed(w http.ResponseWriter, r *http.Request, count int, encode func(*chunkEncoder)) bool {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Add("Vary", "Accept-Encoding")
	var out io.Writer = w
	var zw *gzip.Writer
	if count >= gzipMinDecisions && acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		zw = gzipPool.Get().(*gzip.Writer)
		zw.Reset(w)
		out = zw
	}
	w.WriteHeader(http.StatusOK)
	g := newStallGuard(w)
	defer g.done()
	bp := chunkPool.Get().(*[]byte)
	e := chunkEncoder{buf: (*bp)[:0], sink: func(b []byte) ([]byte, bool) {
		g.arm()
		_, err := out.Write(b)
		return b[:0], err == nil
	}}
	encode(&e)
	ok := e.finish()
	if zw != nil {
		g.arm()
		if err := zw.Close(); err != nil {
			ok = false
		}
		zw.Reset(io.Discard)
		gzipPool.Put(zw)
	}
	if cap(e.buf) <= 4*chunkSize { // a huge value grew it: let it go
		*bp = e.buf[:0]
		chunkPool.Put(bp)
	}
	return ok
}

// acceptsGzip reports whether the request's Accept-Encoding lists gzip
// (or x-gzip) with a non-zero quality. Go's http.Transport asks for gzip
// by default, so every Go bouncer gets it.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			name = strings.ToLower(strings.TrimSpace(name))
			if name != "gzip" && name != "x-gzip" {
				continue
			}
			for _, p := range strings.Split(params, ";") {
				k, v, ok := strings.Cut(p, "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if q, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && q == 0 {
						return false
					}
				}
			}
			return true
		}
	}
	return false
}
