package fsm

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/halapi/halapi/internal/lowprio"
)

// FSM is the raft state machine. Reads go through the query methods
// (query_*.go); writes only through raft log entries.
//
// Readers never take a lock an apply holds: they read the last published
// state (pub), which is immutable; the apply goroutine changes its own
// state (s, under mu, which only Apply, Snapshot and Restore take) and
// publishes a frozen copy after each entry or batch (state.publish).
type FSM struct {
	mu  sync.Mutex
	s   *state
	pub atomic.Pointer[state]
	log *slog.Logger

	waitMu  sync.Mutex
	applied uint64
	notify  chan struct{}

	// hints are entries the leader already decoded (forwarded writes it
	// validated), keyed by the first byte of the exact slice handed to
	// raft.Apply: Apply takes the decoded command instead of decoding the
	// same bytes a second time.
	hintMu sync.Mutex
	hints  map[*byte]Command
	// idHints are this follower's own forwarded writes, decoded while
	// the leader handled them (HintForwarded), keyed by request ID: the
	// entry comes back through replication as other bytes (the leader
	// stamps its time), so the body is compared before the hint is used.
	idHints map[string]idHint
	// hintsTaken counts the applies that took an idHint.
	hintsTaken atomic.Uint64

	profWatch profilesWatch // ProfilesChanged (profiles.go)

	// compressSnapshots: the next snapshots are s2-compressed
	// (SetCompressedSnapshots).
	compressSnapshots atomic.Bool

	// bulk applies batches that hold a big list import on a thread of
	// lower priority (lowprio.go).
	bulk lowprio.Runner

	// batches and entries count what raft handed Apply/ApplyBatch: calls,
	// and the entries in them (ApplyCounts).
	batches, entries atomic.Uint64
}

// ApplyCounts is how many batches raft handed this FSM and how many
// entries they held: entries per batch is the group commit raft achieved
// (each batch costs a publish, and on the way a log write and an
// AppendEntries round).
func (f *FSM) ApplyCounts() (batches, entries uint64) {
	return f.batches.Load(), f.entries.Load()
}

// New returns an empty FSM.
func New(logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.Default()
	}
	f := &FSM{s: newState(), log: logger, notify: make(chan struct{})}
	f.pub.Store(f.s.publish())
	return f
}

// read returns the last published state: immutable, no lock needed.
func (f *FSM) read() *state { return f.pub.Load() }

// publishLocked makes the writer's state visible to readers (mu held).
func (f *FSM) publishLocked() {
	f.pub.Store(f.s.publish())
	f.profilesPublished(f.s.profiles)
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	f.batches.Add(1)
	f.entries.Add(1)
	if l.Type != raft.LogCommand {
		f.markApplied(l.Index)
		return nil
	}
	res := f.applyLogs([]*raft.Log{l}, nil)[0]
	f.markApplied(l.Index)
	return res
}

// ApplyBatch implements raft.BatchingFSM: one publish and one wake-up for
// a whole group commit.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	f.batches.Add(1)
	f.entries.Add(uint64(len(logs)))
	out := f.applyLogs(logs, make([]any, len(logs)))
	if n := len(logs); n > 0 && logs[n-1].Index > 0 {
		f.markApplied(logs[n-1].Index)
	}
	return out
}

// applyLogs applies the command entries of logs to the writer's state and
// publishes the result once. out receives one result per log (nil for
// non-command entries); a nil out is allocated. An entry that stops the
// node (skipOrStop) panics with mu released.
func (f *FSM) applyLogs(logs []*raft.Log, out []any) []any {
	if out == nil {
		out = make([]any, len(logs))
	}
	if hasBulk(logs) {
		// a big list decodes and applies for tens of milliseconds: on a
		// node with fewer CPUs than busy threads the queries go first
		f.bulk.Run(func() { f.applyLogsNow(logs, out) })
		if err := f.bulk.Err(); err != nil && f.bulk.Runs() == 1 {
			f.log.Warn("big list imports apply at the node's own priority", "err", err)
		}
		return out
	}
	return f.applyLogsNow(logs, out)
}

// applyLogsNow is applyLogs on the calling goroutine.
func (f *FSM) applyLogsNow(logs []*raft.Log, out []any) []any {
	pre := f.predecode(logs)
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		var cmd Command
		var err error
		if pre != nil && pre[i].ok {
			cmd, err = pre[i].cmd, pre[i].err
		} else {
			cmd, err = f.decode(l.Data)
		}
		out[i] = f.applyEntry(l.Index, l.Data, cmd, err)
	}
	f.publishLocked()
	return out
}

// applyEntry applies one decoded entry (cmd, or the decode error) to the
// writer's state (mu held).
func (f *FSM) applyEntry(index uint64, data []byte, cmd Command, err error) *Result {
	if err != nil {
		res := f.skipOrStop(index, data, err)
		f.s.lastIndex = index
		return res
	}
	res, dup := f.s.seen(cmd.ID)
	if !dup {
		res = f.s.apply(index, cmd)
		f.s.remember(cmd.ID, res)
	}
	f.s.lastIndex = index
	return res
}

// skipOrStop decides what happens to an entry that does not decode (the
// rule is in doc.go): a malformed entry of a known type, or one that no
// version ever wrote, is skipped with an error result; an unknown type
// with IgnorableFlag is skipped; an unknown type without it, or a newer
// entry format, stops the node.
func (f *FSM) skipOrStop(index uint64, data []byte, err error) *Result {
	switch EntryKind(data) {
	case EntryUnknownIgnorable:
		f.log.Warn("skipping unknown ignorable command", "type", data[1], "index", index)
		return fail(CodeInternal, "unknown ignorable command type %d", data[1])
	case EntryNewer:
		// An entry this node cannot apply would make its state diverge
		// from the others: stop rather than serve wrong data.
		panic(fmt.Sprintf("fsm: cannot apply log entry %d (written by a newer version?): %v", index, err))
	}
	f.log.Error("skipping malformed log entry", "index", index, "err", err)
	return fail(CodeInvalid, "invalid command: %v", err)
}

func (f *FSM) markApplied(index uint64) {
	f.waitMu.Lock()
	if index > f.applied {
		f.applied = index
	}
	close(f.notify)
	f.notify = make(chan struct{})
	f.waitMu.Unlock()
}

// AppliedIndex is the last raft index applied to this FSM.
func (f *FSM) AppliedIndex() uint64 {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.applied
}

// WaitForIndex blocks until index has been applied locally or ctx ends.
func (f *FSM) WaitForIndex(ctx context.Context, index uint64) error {
	for {
		f.waitMu.Lock()
		if f.applied >= index {
			f.waitMu.Unlock()
			return nil
		}
		ch := f.notify
		f.waitMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
