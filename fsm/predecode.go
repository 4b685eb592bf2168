package fsm

// Decoding entries off the apply goroutine: big entries of a batch on
// several cores, and the entries the leader already decoded (hints).

import (
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
