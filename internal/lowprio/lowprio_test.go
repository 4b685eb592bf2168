package lowprio

import (
	"runtime"
	"testing"
)

// A panic on the low-priority thread (an entry that must stop the node)
// is raised again on the caller's goroutine, and the thread keeps working.
func TestPanicReachesTheCaller(t *testing.T) {
	var w Runner
	got := func() (p any) {
		defer func() { p = recover() }()
		w.Run(func() { panic("stop the node") })
		return nil
	}()
	if got != "stop the node" {
		t.Fatalf("recovered %v in the caller, want the panic", got)
	}
	ran := false
	w.Run(func() { ran = true })
	if !ran {
		t.Fatal("the thread stopped working after a panic")
	}
}

// A goroutine's LockAndLower lowers its own thread only: Nice levels
// below the process's (up to 19), the others untouched.
func TestLockAndLowerOnlyThatThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("per-thread priority is Linux-only")
	}
	base := processNice(t)
	type got struct {
		nice int
		err  error
	}
	ch := make(chan got)
	go func() {
		if err := LockAndLower(); err != nil {
			ch <- got{err: err}
			return
		}
		n, err := ThreadNice()
		ch <- got{n, err}
	}()
	g := <-ch
	if g.err != nil {
		t.Skipf("this sandbox refuses setpriority: %v", g.err)
	}
	if want := min(base+Nice, 19); g.nice != want {
		t.Fatalf("the locked thread runs at nice %d, want %d", g.nice, want)
	}
	if after := processNice(t); after != base {
		t.Fatalf("another thread is at nice %d after LockAndLower, was %d", after, base)
	}
	var w Runner
	if w.Err() != nil || w.Runs() != 0 {
		t.Fatal("a Runner that never ran reports a run or an error")
	}
	var n int
	w.Run(func() { n, _ = ThreadNice() })
	if w.Err() == nil && n != min(base+Nice, 19) {
		t.Fatalf("the Runner's thread runs at nice %d, want %d", n, min(base+Nice, 19))
	}
}

func processNice(t *testing.T) int {
	t.Helper()
	n, err := ProcessNice()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
