package fsm

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// bulkNice is how much lower than the process's the priority of the
// thread that applies big entries (an imported list, a CAPI pull) is: the
// kernel gives a thread ten nice levels above another about a tenth of its
// CPU share when both want the CPU, so on a node with fewer CPUs than busy
// threads the queries run first and the bulk apply takes what they leave.
// Small entries (an alert, a ban) stay on raft's own goroutine.
const bulkNice = 10

// bulkMin is the size of an import entry that is applied on the
// low-priority thread (the size predecode also starts at: a list of about
// 1,000 values).
const bulkMin = predecodeMin

// lowPrio runs functions one at a time on a goroutine locked to an OS
// thread whose nice value is bulkNice above the process's (at most 19). The thread is started on first use
// and kept: lowering a thread's priority is allowed to anyone, raising it
// back is not, so the low-priority thread is never handed back to the
// runtime for other goroutines.
type lowPrio struct {
	once sync.Once
	ch   chan func()
	// niceErr is why the thread could not be niced (it still runs the
	// work, at the process's priority); set before the first run.
	niceErr error
	runs    atomic.Uint64
}

func (w *lowPrio) start() {
	w.ch = make(chan func())
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the niced thread ends with the process
		w.niceErr = lowerThreadPriority(bulkNice)
		close(ready)
		for fn := range w.ch {
			fn()
		}
	}()
	<-ready
}

// run calls fn on the low-priority thread and waits for it; a panic in fn
// is raised again in the caller (an entry that must stop the node stops it
// from raft's goroutine, as before).
func (w *lowPrio) run(fn func()) {
	w.once.Do(w.start)
	w.runs.Add(1)
	done := make(chan any, 1)
	w.ch <- func() {
		defer func() { done <- recover() }()
		fn()
	}
	if p := <-done; p != nil {
		panic(p)
	}
}

// hasBulk reports whether logs hold a big list import (a blocklist or CAPI
// pull, cscli decisions import): what the low-priority thread is for. A
// big alert batch is not one: an agent waits for it, and its apply is
// short.
func hasBulk(logs []*raft.Log) bool {
	for _, l := range logs {
		if l.Type == raft.LogCommand && len(l.Data) >= bulkMin && l.Data[0] != 0 {
			switch CmdType(l.Data[1]) {
			case CmdImportList, CmdImportDecisions:
				return true
			}
		}
	}
	return false
}
