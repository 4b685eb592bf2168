package lapi

import (
	"runtime"
	"sync/atomic"

	"github.com/halapi/halapi/fsm"
)

// A startup answer is built from an immutable published state
// (fsm.StartupWalk), so its "new" list can be encoded in parts at once:
// the ID space is cut into parts of about partDecisions decisions, one
// goroutine per core takes the next part, and the parts' chunks are
// published in order as they come — part 0 streams to the sockets while
// the cores encode the parts after it. A part's items each start with a
// comma; the first item of the answer gets '[' instead. Small chunks at
// the part boundaries are merged, so a small answer is still one chunk.
// The body is byte for byte the one-goroutine encoding
// (TestStartupPartsSameBytes, TestStreamGolden).

// parallelMin is the number of stored decisions from which a startup is
// encoded in parts on several cores; partDecisions the size of a part
// (about 4 MB of JSON: small enough that the first one goes out soon,
// big enough that the parts' hand-offs cost nothing).
var (
	parallelMin   = 50000
	partDecisions = 25000
)

// maxParts bounds the parts of one answer (and the goroutine hand-offs).
const maxParts = 256

// encodeStartup encodes e's startup answer and publishes its chunks.
func (c *streamCache) encodeStartup(e *sharedEncoding) {
	view := c.f.View()
	w := view.StartupWalk(e.f, e.at)
	e.mu.Lock()
	e.index = view.Index()
	e.mu.Unlock()
	n := e.at.UnixNano()
	pub := joiner{c: c, e: e}
	head := chunkEncoder{buf: c.free.get(), sink: func(b []byte) ([]byte, bool) {
		pub.add(b)
		return c.free.get(), true
	}}
	head.buf = append(head.buf, `{"deleted":`...)
	head.decisions(w.Deleted(), n, true)
	head.buf = append(head.buf, `,"new":`...)
	head.finish()
	c.free.put([][]byte{head.buf})

	lo, hi := w.IDSpan()
	parts, workers := 1, runtime.GOMAXPROCS(0)
	if total := w.Len(); total >= parallelMin && workers > 1 {
		parts = min(maxParts, max(2, total/max(1, partDecisions)))
	}
	step := max(1, (hi-lo+int64(parts)-1)/int64(parts))
	// A part's chunks wait in its channel until the parts before it are
	// published; a full channel only makes its encoder wait.
	chs := make([]chan []byte, parts)
	depth := w.Len()/parts*256/chunkSize + 8
	for i := range chs {
		chs[i] = make(chan []byte, depth)
	}
	var next atomic.Int64
	for range min(workers, parts) {
		go func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= parts {
					return
				}
				a := lo + int64(i)*step
				pe := chunkEncoder{buf: c.free.get(), sink: func(b []byte) ([]byte, bool) {
					chs[i] <- b
					return c.free.get(), true
				}}
				w.New(a, min(a+step, hi), func(d *fsm.Decision) bool {
					pe.item(d, n)
					return true
				})
				pe.finish()
				c.free.put([][]byte{pe.buf}) // the unused buffer the last spill got
				close(chs[i])
			}
		}()
	}
	opened := false
	for _, ch := range chs {
		for b := range ch {
			if !opened {
				b[0] = '[' // the first item's comma
				opened = true
			}
			pub.add(b)
		}
	}
	if opened {
		pub.end("]}")
	} else {
		pub.end("null}")
	}
}

// item encodes one element of a JSON array that is not its first.
func (e *chunkEncoder) item(d *fsm.Decision, now int64) {
	e.buf = append(e.buf, ',')
	e.buf = e.fc.appendDecision(e.buf, d, now, true)
	if len(e.buf) >= chunkSize {
		e.spill()
	}
}

// joiner publishes a shared encoding's chunks, merging a chunk into the
// one before it when both fit in one (the ends of parts, the head).
type joiner struct {
	c       *streamCache
	e       *sharedEncoding
	pending []byte // a partial chunk not yet published
}

func (j *joiner) add(b []byte) {
	if j.pending != nil {
		if len(j.pending)+len(b) <= chunkSize {
			j.pending = append(j.pending, b...)
			j.c.free.put([][]byte{b})
			return
		}
		j.e.publish(j.pending, false)
		j.pending = nil
	}
	if len(b) >= chunkSize {
		j.e.publish(b, false)
		return
	}
	j.pending = b
}

// end appends tail to the last chunk and publishes it.
func (j *joiner) end(tail string) {
	if j.pending == nil {
		j.pending = j.c.free.get()
	}
	j.e.publish(append(j.pending, tail...), false)
	j.pending = nil
}
