package agentbench

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// cpuOf (from /proc, 10 ms ticks) follows this process's own getrusage.
func TestCPUOfCountsThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	before := cpuOf(os.Getpid())
	deadline := time.Now().Add(10 * time.Second)
	for x := 0; cpuOf(os.Getpid()) < before+50*time.Millisecond; x++ {
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stuck at %v over a 10 s busy loop", cpuOf(os.Getpid()))
		}
		_ = x * x
	}
	proc, self := cpuOf(os.Getpid()), selfCPU()
	if d := proc - self; d > 50*time.Millisecond || d < -50*time.Millisecond {
		t.Fatalf("/proc says %v, getrusage %v", proc, self)
	}
	if got := cpuOf(-1); got != 0 {
		t.Fatalf("cpuOf(-1) = %v, want 0", got)
	}
}

func TestPinSelfAndRestore(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.NumCPU() < 2 {
		t.Skip("needs Linux and 2 CPUs")
	}
	var orig, now cpuSet
	if err := getAffinity(0, &orig); err != nil {
		t.Fatal(err)
	}
	restore, err := pinSelf(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := getAffinity(0, &now); err != nil {
		t.Fatal(err)
	}
	var want cpuSet
	want.set(0)
	if now != want {
		restore()
		t.Fatalf("pinned mask %x, want %x", now[0], want[0])
	}
	restore()
	if err := getAffinity(0, &now); err != nil {
		t.Fatal(err)
	}
	if now != orig {
		t.Fatalf("restored mask %x, want %x", now[0], orig[0])
	}
}

func TestMedianPerField(t *testing.T) {
	m := median([]Figures{
		{RPS: 3, P50: 30, AgentCPU: 1},
		{RPS: 1, P50: 10, AgentCPU: 3},
		{RPS: 2, P50: 20, AgentCPU: 2},
	})
	if m.RPS != 2 || m.P50 != 20 || m.AgentCPU != 2 {
		t.Fatalf("median %+v", m)
	}
}
