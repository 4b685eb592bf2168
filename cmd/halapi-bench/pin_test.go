package main

import (
	"os"
	"os/exec"
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
	before := allowedCPUs(os.Getpid(), os.Getpid())
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
		if l != last {
			t.Errorf("a thread of this process may run on %q, want %s", l, last)
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
	restore()
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
