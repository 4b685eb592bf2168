package fsm

// Decoding entries off the apply goroutine: big entries of a batch on
// several cores, and the entries the leader already decoded (hints).

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"sync"

	"github.com/hashicorp/raft"
)

// predecodeMin is the entry size from which a batch's entries are decoded
// in parallel before they are applied (big list imports).
const predecodeMin = 64 << 10

// predecodeWorkers is how many goroutines predecode uses at most (a
// variable for the tests).
var predecodeWorkers = func() int { return runtime.GOMAXPROCS(0) - 1 }

type predecoded struct {
	cmd Command
	err error
	ok  bool
}

// predecode decodes the big command entries of a batch on all cores but
// one (decoding is pure; applying stays sequential), or returns nil when
// fewer than two would work (fewer than two big entries, or fewer than 3
// cores).
func (f *FSM) predecode(logs []*raft.Log) []predecoded {
	var big []int
	for i, l := range logs {
		if l.Type == raft.LogCommand && len(l.Data) >= predecodeMin {
			big = append(big, i)
		}
	}
	// one P stays free for readers: a follower keeps answering queries
	// while it ingests a big list
	workers := min(len(big), predecodeWorkers())
	if workers < 2 {
		return nil
	}
	out := make([]predecoded, len(logs))
	next := make(chan int, len(big))
	for _, i := range big {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c, err := f.decode(logs[i].Data)
				out[i] = predecoded{cmd: c, err: err, ok: true}
			}
		}()
	}
	wg.Wait()
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

// idHint is a forwarded write decoded on the follower that forwarded it.
type idHint struct {
	entry []byte // the encoded command as forwarded (its time not stamped yet)
	cmd   Command
}

// maxIDHints bounds the forwarded writes decoded ahead: one per write
// waiting on this node, so only a node with that many writers in flight
// decodes the rest when they are applied.
const maxIDHints = 1024

// HintForwarded decodes entry, a command with a request ID that this node
// forwards to the leader, so that its apply here — in the FSM's single
// apply goroutine, which the write waits for — takes the decoded command
// instead of decoding the replicated bytes again. It runs on the writer's
// goroutine while the leader handles the write. The returned func drops
// the hint; it must be called once the write has returned. The hint is
// used only for an entry whose ID, type and body are entry's.
func (f *FSM) HintForwarded(entry []byte) (forget func()) {
	id, ok := entryID(entry)
	if !ok {
		return func() {}
	}
	c, err := Decode(entry)
	if err != nil {
		return func() {}
	}
	f.hintMu.Lock()
	defer f.hintMu.Unlock()
	if _, dup := f.idHints[id]; dup || len(f.idHints) >= maxIDHints {
		return func() {}
	}
	if f.idHints == nil {
		f.idHints = map[string]idHint{}
	}
	f.idHints[id] = idHint{entry: entry, cmd: c}
	return func() {
		f.hintMu.Lock()
		if h, ok := f.idHints[id]; ok && &h.entry[0] == &entry[0] {
			delete(f.idHints, id)
		}
		f.hintMu.Unlock()
	}
}

// entryID is the request ID of an entry in format 2 (false: none).
func entryID(entry []byte) (string, bool) {
	if len(entry) < 11 || entry[0] != formatV2 || entry[10] == 0 || len(entry) < 11+int(entry[10]) {
		return "", false
	}
	return string(entry[11 : 11+int(entry[10])]), true
}

// decode is Decode, or the command already decoded from these very bytes
// (Predecoded, on the leader) or from the same command before the leader
// stamped it (HintForwarded, on the follower that forwarded it), with the
// time stamped in the entry.
func (f *FSM) decode(data []byte) (Command, error) {
	if len(data) >= 10 {
		f.hintMu.Lock()
		c, ok := f.hints[&data[0]]
		if ok {
			delete(f.hints, &data[0])
		} else if len(f.idHints) > 0 {
			c, ok = f.takeIDHint(data)
		}
		f.hintMu.Unlock()
		if ok {
			c.Time = int64(binary.BigEndian.Uint64(data[2:10]))
			return c, nil
		}
	}
	return Decode(data)
}

// takeIDHint returns (and drops) the HintForwarded command for data, if
// data is that command: same format, type, ID and body; only the time
// (bytes 2 to 10) may differ. Called with hintMu held.
func (f *FSM) takeIDHint(data []byte) (Command, bool) {
	id, ok := entryID(data)
	if !ok {
		return Command{}, false
	}
	h, ok := f.idHints[id]
	if !ok || len(h.entry) != len(data) || h.entry[1] != data[1] || !bytes.Equal(h.entry[10:], data[10:]) {
		return Command{}, false
	}
	delete(f.idHints, id)
	f.hintsTaken.Add(1)
	return h.cmd, true
}

// ForwardHints is how many applied entries this node took from
// HintForwarded instead of decoding them, and how many hints it holds.
func (f *FSM) ForwardHints() (taken uint64, pending int) {
	f.hintMu.Lock()
	defer f.hintMu.Unlock()
	return f.hintsTaken.Load(), len(f.idHints)
}
