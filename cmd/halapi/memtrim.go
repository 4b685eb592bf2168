package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// Returning memory once the node has gone quiet after a burst of work.
//
// A big apply (a CAPI list, an import, an installed snapshot) or a storm
// of startup streams leaves two kinds of memory resident that nothing will
// use again soon:
//
//   - free Go heap: garbage not yet collected when the work stopped (no
//     allocation, so no collection is due) and free pages the runtime keeps
//     for reuse. With 1,000,000 decisions (~260 MiB live) the heap held
//     ~540 MiB of RSS when the load stopped;
//   - the raft log's BoltDB mmap: bolt copies a leaf's values when it
//     rewrites the leaf, reading them through its read-only mapping, so the
//     entries of a big import become resident file pages of the process
//     (~90 MiB for 1,000,000 decisions), and stay so after the log is
//     compacted.
//
// The trimmer samples the runtime's cumulative allocation count every
// trimTick. Once at least max(trimMin, half the live heap) bytes were
// allocated since the last collection forced by anyone (this trimmer, the
// stream cache's scavenger after a storm, debug.FreeOSMemory elsewhere),
// and the process then allocated less than trimQuietRate per second for
// trimQuiet, it asks the kernel to reclaim the raft log's resident pages
// (MADV_PAGEOUT: clean file pages are dropped, nothing is lost; a later
// read faults them back in from the page cache or the disk) and returns
// the free heap (debug.FreeOSMemory: one concurrent collection, then the
// free pages handed back).
//
// Why it does not fire in the middle of a pull: a node applying decisions
// allocates about 1 KB per decision (decoding, the record, the indexes,
// bolt), so applying even 1,000 decisions per second keeps it above
// trimQuietRate; the follower of a pull applies at the leader's pace; and
// ticks that come late (a machine too busy to run the node: its low
// allocation count says nothing about the work waiting) do not count as
// quiet. An earlier policy triggered on the FSM's applied bytes alone, so
// a node waiting on anything else looked quiet; a follower query stalled
// 3 s in a pull while it was on (BENCHMARKS.md) and it was reverted.
const (
	trimTick      = 250 * time.Millisecond
	trimQuiet     = time.Second
	trimQuietRate = 1 << 20 // bytes allocated per second
	trimMin       = 64 << 20
)

// trimSample is one reading of the runtime's counters.
type trimSample struct {
	allocs uint64 // bytes allocated since the start (/gc/heap/allocs:bytes)
	forced uint64 // forced collections (/gc/cycles/forced:gc-cycles)
	live   uint64 // the live heap marked by the last collection (/gc/heap/live:bytes)
}

type trimmer struct {
	read func() trimSample
	trim func()

	quiet time.Duration
	rate  float64
	min   uint64

	started   bool
	base      uint64 // allocs at the last forced collection
	prev      trimSample
	prevAt    time.Time
	busySince time.Time
	runs      int
}

func newTrimmer(read func() trimSample, trim func()) *trimmer {
	return &trimmer{read: read, trim: trim, quiet: trimQuiet, rate: trimQuietRate, min: trimMin}
}

// tick takes one sample and trims when the burst is over; it reports
// whether it trimmed.
func (t *trimmer) tick(now time.Time) bool {
	v := t.read()
	if !t.started {
		t.started = true
		t.base, t.prev, t.prevAt, t.busySince = v.allocs, v, now, now
		return false
	}
	if v.forced != t.prev.forced {
		// Someone else just returned the heap (the stream scavenger after
		// a storm): what was allocated before is accounted for.
		t.base = v.allocs
	}
	// A tick that comes late means the process did not get a CPU (an
	// overloaded machine): its low allocation count says nothing about
	// the work waiting, so it does not count as quiet.
	if gap := now.Sub(t.prevAt); gap > 2*trimTick || gap <= 0 || float64(v.allocs-t.prev.allocs)/gap.Seconds() >= t.rate {
		t.busySince = now
	}
	t.prev, t.prevAt = v, now
	// Half the live heap: with the node's GOGC of 50 the runtime collects
	// after about that much allocation anyway, so on a lightly loaded node
	// (steady small allocations, quiet by the rate) the trims add at most
	// as many collections as the runtime runs by itself.
	if v.allocs-t.base < max(t.min, v.live/2) || now.Sub(t.busySince) < t.quiet {
		return false
	}
	t.trim()
	t.runs++
	after := t.read()
	t.base, t.prev = after.allocs, after
	return true
}

func readTrimSample() trimSample {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/forced:gc-cycles"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	u := func(i int) uint64 {
		if s[i].Value.Kind() == metrics.KindUint64 {
			return s[i].Value.Uint64()
		}
		return 0
	}
	return trimSample{allocs: u(0), forced: u(1), live: u(2)}
}

// runIdleTrim runs the trimmer until ctx ends; raftLog is the BoltDB file
// whose mapping is paged out with the heap.
func runIdleTrim(ctx context.Context, raftLog string, logger *slog.Logger) {
	warned := false
	t := newTrimmer(readTrimSample, func() {
		t0 := time.Now()
		n, err := pageOutFile(raftLog)
		if err != nil && !warned {
			warned = true
			logger.Debug("cannot page out the raft log's mapping", "err", err)
		}
		t1 := time.Now()
		debug.FreeOSMemory()
		logger.Debug("returned idle memory", "raft_log_mapped_bytes", n, "page_out", t1.Sub(t0), "free_heap", time.Since(t1))
	})
	tk := time.NewTicker(trimTick)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			t.tick(now)
		}
	}
}

// parseMapsLine parses "start-end perms offset dev inode path".
func parseMapsLine(l string) (start, end uintptr, path string, ok bool) {
	rest := l
	var fields [5]string
	for i := range fields {
		rest = strings.TrimLeft(rest, " ")
		j := strings.IndexByte(rest, ' ')
		if j < 0 {
			return 0, 0, "", false
		}
		fields[i], rest = rest[:j], rest[j:]
	}
	path = strings.TrimSpace(rest)
	a, b, found := strings.Cut(fields[0], "-")
	if !found {
		return 0, 0, "", false
	}
	s, err1 := strconv.ParseUint(a, 16, 64)
	e, err2 := strconv.ParseUint(b, 16, 64)
	if err1 != nil || err2 != nil || e <= s {
		return 0, 0, "", false
	}
	return uintptr(s), uintptr(e), path, true
}

// raftLogFile is the raft log's BoltDB file under a data directory
// (cluster.Start opens DATA/raft/raft.db).
func raftLogFile(dataDir string) string { return filepath.Join(dataDir, "raft", "raft.db") }
