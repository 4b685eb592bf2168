package main

import (
	"bufio"
	"net/http"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestProcsFloor(t *testing.T) {
	for _, c := range []struct {
		env           string
		current, want int
	}{
		{"", 1, 2}, {"", 2, 2}, {"", 8, 8}, {"1", 1, 1}, {"4", 4, 4},
	} {
		if got := procsFloor(c.env, c.current); got != c.want {
			t.Errorf("procsFloor(%q, %d) = %d, want %d", c.env, c.current, got, c.want)
		}
	}
}

// A node started on one CPU (the affinity it inherits) runs two Ps, and
// one with GOMAXPROCS=1 in its environment runs one: read from the
// node's own /metrics (go_sched_gomaxprocs_threads).
func TestServeOnOneCPURunsTwoPs(t *testing.T) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Skip("no sched_getaffinity:", err)
	}
	first := -1
	for c := 0; c < 1024 && first < 0; c++ {
		if all.IsSet(c) {
			first = c
		}
	}
	// the node inherits the affinity of the thread that starts it
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(first)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		t.Skip("cannot pin:", err)
	}
	metrics := freeAddr(t)
	startNode(t, "--metrics-listen", metrics)
	t.Setenv("GOMAXPROCS", "1")
	metricsOne := freeAddr(t)
	startNode(t, "--metrics-listen", metricsOne)
	_ = unix.SchedSetaffinity(0, &all)
	runtime.UnlockOSThread()

	if got := gomaxprocs(t, metrics); got != "2" {
		t.Errorf("a node on one CPU runs %s Ps, want 2", got)
	}
	if got := gomaxprocs(t, metricsOne); got != "1" {
		t.Errorf("a node on one CPU with GOMAXPROCS=1 runs %s Ps, want 1", got)
	}
}

func gomaxprocs(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_sched_gomaxprocs_threads "); ok {
			return v
		}
	}
	t.Fatal("no go_sched_gomaxprocs_threads in /metrics")
	return ""
}
