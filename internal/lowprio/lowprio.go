// Package lowprio runs bulk work (a big list's apply, a blocklist pull) on
// OS threads of lower priority than the rest of the node, so that on a
// node with fewer CPUs than busy threads the kernel runs the queries
// first and the bulk work takes what they leave. It must not be used for
// work a client waits on (an alert, a ban): that would only make it later.
//
// A niced thread is never handed back to the Go runtime: lowering a
// thread's priority is allowed to anyone, raising it back is not, so a
// goroutine that lowered its thread stays locked to it until it exits,
// and the runtime then ends the thread.
package lowprio

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Nice is how many nice levels below the process's the bulk threads run
// (at most 19): the kernel gives a thread ten levels down about a tenth
// of the CPU share of the other when both want the CPU.
const Nice = 10

// LockAndLower locks the calling goroutine to its OS thread for the rest
// of its life and lowers that thread's priority by Nice. The error says
// why the priority could not be lowered (the goroutine is locked anyway
// and runs at the process's priority).
func LockAndLower() error {
	runtime.LockOSThread() // never unlocked: see the package comment
	return LowerThreadPriority(Nice)
}

// Runner runs functions one at a time on a goroutine locked to a niced
// thread, started on first use and kept.
type Runner struct {
	once sync.Once
	ch   chan func()
	err  error // from LockAndLower, set before the first run
	runs atomic.Uint64
}

func (w *Runner) start() {
	w.ch = make(chan func())
	ready := make(chan struct{})
	go func() {
		w.err = LockAndLower()
		close(ready)
		for fn := range w.ch {
			fn()
		}
	}()
	<-ready
}

// Run calls fn on the low-priority thread and waits for it. A panic in fn
// is raised again in the caller (for the FSM: an entry that must stop the
// node stops it from raft's goroutine, as it would without the Runner).
func (w *Runner) Run(fn func()) {
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

// Runs is how many functions Run was given.
func (w *Runner) Runs() uint64 { return w.runs.Load() }

// Err is why the Runner's thread could not be niced (nil once it was, or
// before the first Run).
func (w *Runner) Err() error {
	// runs is added after start returned: once it is non-zero, err is set
	// and this load orders the read after it
	if w.runs.Load() == 0 {
		return nil
	}
	return w.err
}

// ProcessNice is the nice value of a thread of this process that no
// goroutine lowered: a niced thread stays locked to its goroutine, so the
// one a fresh locked goroutine runs on is not one.
func ProcessNice() (int, error) {
	type answer struct {
		nice int
		err  error
	}
	ch := make(chan answer)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		n, err := ThreadNice()
		ch <- answer{n, err}
	}()
	a := <-ch
	return a.nice, a.err
}
