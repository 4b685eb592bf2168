package fsm

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// FSM is the raft state machine. Reads go through the query methods
// (query.go); writes only through raft log entries.
type FSM struct {
	mu  sync.RWMutex
	s   *state
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

	// OnApply, if set, is called after each entry with its type and
	// duration (metrics). It must not block.
	OnApply func(t CmdType)
}

// New returns an empty FSM.
func New(logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.Default()
	}
	return &FSM{s: newState(), log: logger, notify: make(chan struct{})}
}

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		f.markApplied(l.Index)
		return nil
	}
	res := f.applyEntry(l.Index, l.Data)
	f.markApplied(l.Index)
	return res
}

// ApplyBatch implements raft.BatchingFSM: one lock and one wake-up for a
// whole group commit.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	var last uint64
	for i, l := range logs {
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		out[i] = f.applyEntry(l.Index, l.Data)
	}
	if last > 0 {
		f.markApplied(last)
	}
	return out
}

// Predecoded tells Apply that entry — the very slice about to be handed to
// raft.Apply on this node — decodes to c (as Decode would return it), so it
// is not decoded again when applied here. Forget must follow once the
// entry was applied or abandoned.
func (f *FSM) Predecoded(entry []byte, c Command) {
	if len(entry) < 10 {
		return
	}
	f.hintMu.Lock()
	if f.hints == nil {
		f.hints = map[*byte]Command{}
	}
	f.hints[&entry[0]] = c
	f.hintMu.Unlock()
}

// Forget drops a Predecoded hint that was not used.
func (f *FSM) Forget(entry []byte) {
	if len(entry) == 0 {
		return
	}
	f.hintMu.Lock()
	delete(f.hints, &entry[0])
	f.hintMu.Unlock()
}

// decode is Decode, or the command the leader already decoded from these
// very bytes (Predecoded), with the time stamped in the entry.
func (f *FSM) decode(data []byte) (Command, error) {
	if len(data) >= 10 {
		f.hintMu.Lock()
		c, ok := f.hints[&data[0]]
		if ok {
			delete(f.hints, &data[0])
		}
		f.hintMu.Unlock()
		if ok {
			c.Time = int64(binary.BigEndian.Uint64(data[2:10]))
			return c, nil
		}
	}
	return Decode(data)
}

func (f *FSM) applyEntry(index uint64, data []byte) *Result {
	cmd, err := f.decode(data)
	if err != nil {
		res := f.skipOrStop(index, data, err)
		f.mu.Lock()
		f.s.lastIndex = index
		f.mu.Unlock()
		return res
	}
	f.mu.Lock()
	res, dup := f.s.seen(cmd.ID)
	if !dup {
		res = f.s.apply(index, cmd)
		f.s.remember(cmd.ID, res)
	}
	f.s.lastIndex = index
	f.mu.Unlock()
	if f.OnApply != nil {
		f.OnApply(cmd.Type)
	}
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
