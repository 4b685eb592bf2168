package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// threadsCPUs returns Cpus_allowed_list of every thread of pid.
func threadsCPUs(t *testing.T, pid int) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		tid, _ := strconv.Atoi(e.Name())
		if l := allowedCPUs(pid, tid); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no thread of %d readable", pid)
	}
	return out
}

// TestPinLayout pins two child processes apart and checks every thread of
// each, and that this process is back on its CPUs afterwards.
func TestPinLayout(t *testing.T) {
	var cur cpuMask
	if err := schedAffinity(true, 0, &cur); err != nil {
		t.Fatal(err)
	}
	cpus := cur.cpus()
	if len(cpus) < 2 {
		t.Skip("one CPU allowed")
	}
	first, last := strconv.Itoa(cpus[0]), strconv.Itoa(cpus[len(cpus)-1])
	before, procs := allowedCPUs(os.Getpid(), os.Getpid()), runtime.GOMAXPROCS(0)
	var kids []*exec.Cmd
	for range 2 {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		kids = append(kids, c)
	}
	restore, err := pinLayout(kids[0].Process.Pid, []int{kids[1].Process.Pid})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range threadsCPUs(t, os.Getpid()) {
		if l != first {
			t.Errorf("a thread of this process may run on %q, want %s", l, first)
		}
	}
	for _, l := range threadsCPUs(t, kids[0].Process.Pid) {
		if l != last {
			t.Errorf("the follower may run on %q, want %s", l, last)
		}
	}
	for _, l := range threadsCPUs(t, kids[1].Process.Pid) {
		if l != first {
			t.Errorf("the other node may run on %q, want %s", l, first)
		}
	}
	for i, want := range []int{0, 19} {
		pid := kids[i].Process.Pid
		if n, err := niceOf(pid, pid); err != nil || n != want {
			t.Errorf("nice of child %d = %d (%v), want %d", i, n, err, want)
		}
	}
	if p := runtime.GOMAXPROCS(0); p != 1 {
		t.Errorf("GOMAXPROCS %d while pinned, want 1", p)
	}
	restore()
	if p := runtime.GOMAXPROCS(0); p != procs {
		t.Errorf("GOMAXPROCS %d after restore, want %d", p, procs)
	}
	for _, l := range threadsCPUs(t, os.Getpid()) {
		if l != before {
			t.Errorf("after restore a thread of this process may run on %q, want %q", l, before)
		}
	}
}

func TestSlowest(t *testing.T) {
	from := time.Unix(1000, 0)
	ss := []pacedSample{
		{at: from.Add(-time.Millisecond), lat: 9 * time.Second}, // before the window
		{at: from.Add(time.Millisecond), lat: 3 * time.Millisecond},
		{at: from.Add(2 * time.Millisecond), lat: 7 * time.Millisecond},
		{at: from.Add(3 * time.Millisecond), lat: 8 * time.Second, err: true},
		{at: from.Add(4 * time.Millisecond), lat: 5 * time.Millisecond},
	}
	if got, want := slowest(ss, from, from.Add(time.Second), 2), "+2ms: 7ms, +4ms: 5ms"; got != want {
		t.Errorf("slowest = %q, want %q", got, want)
	}
}

// TestRunDelayCountsWaitingForCPU runs two spinning child processes
// pinned to one CPU: each waits on the run queue while the other runs.
func TestRunDelayCountsWaitingForCPU(t *testing.T) {
	var cur cpuMask
	if err := schedAffinity(true, 0, &cur); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/self/schedstat"); err != nil {
		t.Skip("no schedstat")
	}
	cpu := cur.cpus()[0]
	var kids []*exec.Cmd
	for range 2 {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _ = c.Wait() })
		if _, err := pinPID(c.Process.Pid, cpu); err != nil {
			t.Fatal(err)
		}
		kids = append(kids, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runDelay(kids[0].Process.Pid) < 50*time.Millisecond || runDelay(kids[1].Process.Pid) < 50*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("run delays %s and %s after 10 s of two spinners sharing CPU %d",
				runDelay(kids[0].Process.Pid), runDelay(kids[1].Process.Pid), cpu)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d := runDelay(1 << 30); d != 0 {
		t.Errorf("run delay of a missing process = %s", d)
	}
}
