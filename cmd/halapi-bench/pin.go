package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// The pinned layout of the scale phase's second pull: the queried follower
// alone on the last CPU; the load generator (this process: its bouncers;
// the fake CAPI is idle once the list is downloaded) and the two other
// nodes on the first CPU, the nodes at nice 19 so that the load generator
// runs whenever it has something to do. In a deployment each node has its
// own host and the bouncers theirs: nothing takes the follower's CPU, and
// the client's own waits are not the follower's. (Beside the leader at
// the same priority the load generator was itself starved; beside the
// follower it waited for the follower's apply.)

// cpuMask is a sched_setaffinity mask for up to 1024 CPUs.
type cpuMask [16]uint64

func (m *cpuMask) set(cpu int) { m[cpu/64] |= 1 << (uint(cpu) % 64) }

func (m *cpuMask) has(cpu int) bool { return m[cpu/64]&(1<<(uint(cpu)%64)) != 0 }

// cpus lists the CPUs of m in order.
func (m *cpuMask) cpus() []int {
	var out []int
	for c := range len(m) * 64 {
		if m.has(c) {
			out = append(out, c)
		}
	}
	return out
}

func schedAffinity(get bool, tid int, m *cpuMask) error {
	call := uintptr(syscall.SYS_SCHED_SETAFFINITY)
	if get {
		call = syscall.SYS_SCHED_GETAFFINITY
	}
	if _, _, e := syscall.RawSyscall(call, uintptr(tid), unsafe.Sizeof(*m), uintptr(unsafe.Pointer(m))); e != 0 {
		return e
	}
	return nil
}

// pinPID binds every thread of process pid to cpu (threads it starts
// later inherit the mask of the thread that starts them). It returns the
// mask its main thread had before.
func pinPID(pid, cpu int) (old cpuMask, err error) {
	if cpu < 0 || cpu >= len(old)*64 {
		return old, fmt.Errorf("no CPU %d", cpu)
	}
	if err := schedAffinity(true, pid, &old); err != nil {
		return old, err
	}
	var one cpuMask
	one.set(cpu)
	return old, setPIDMask(pid, &one)
}

// setPIDMask sets m on every thread of pid, twice (a thread started
// while the first pass ran).
func setPIDMask(pid int, m *cpuMask) error {
	for range 2 {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		for _, e := range ents {
			tid, _ := strconv.Atoi(e.Name())
			if err := schedAffinity(false, tid, m); err != nil && !errors.Is(err, syscall.ESRCH) {
				return err
			}
		}
	}
	return nil
}

// pinLayout pins fol to the last CPU this process may run on, this
// process and others to the first (others at nice 19), and runs this
// process on one P; restore puts this process back on its previous CPUs
// and Ps (the nodes are stopped with their cluster).
func pinLayout(fol int, others []int) (restore func(), err error) {
	self := os.Getpid()
	var cur cpuMask
	if err := schedAffinity(true, self, &cur); err != nil {
		return nil, err
	}
	cpus := cur.cpus()
	if len(cpus) < 2 {
		return nil, errors.New("one CPU: nothing to pin apart")
	}
	first, last := cpus[0], cpus[len(cpus)-1]
	old, err := pinPID(self, first)
	if err != nil {
		return nil, fmt.Errorf("pinning the load generator to CPU %d: %w", first, err)
	}
	// One P for the load generator too: two Ps on one CPU take turns at
	// the kernel's time slices.
	procs := runtime.GOMAXPROCS(1)
	restore = func() { runtime.GOMAXPROCS(procs); _ = setPIDMask(self, &old) }
	if _, err := pinPID(fol, last); err != nil {
		restore()
		return nil, fmt.Errorf("pinning the follower to CPU %d: %w", last, err)
	}
	for _, p := range others {
		if _, err := pinPID(p, first); err != nil {
			restore()
			return nil, fmt.Errorf("pinning node %d to CPU %d: %w", p, first, err)
		}
		if err := renice(p, 19); err != nil {
			restore()
			return nil, fmt.Errorf("nice 19 for node %d: %w", p, err)
		}
	}
	return restore, nil
}

// renice sets the nice value of every thread of pid (Linux: per thread;
// threads started later inherit it from the thread that starts them).
func renice(pid, nice int) error {
	for range 2 {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return err
		}
		for _, e := range ents {
			tid, _ := strconv.Atoi(e.Name())
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
				return err
			}
		}
	}
	return nil
}

// niceOf reads the nice value of thread tid of pid (/proc stat field 19).
func niceOf(pid, tid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 17 {
		return 0, fmt.Errorf("short stat %q", s)
	}
	return strconv.Atoi(f[16])
}

// allowedCPUs reads Cpus_allowed_list of one thread of pid ("" if unreadable).
func allowedCPUs(pid, tid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		return ""
	}
	const key = "Cpus_allowed_list:"
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, key); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// runDelay sums, over the live threads of pid, the time they spent
// runnable on a kernel run queue without a CPU (/proc/PID/task/TID/schedstat,
// second field; needs schedstats, 0 when unreadable): how long the
// process waited for a CPU, not for anything of its own.
func runDelay(pid int) time.Duration {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var sum time.Duration
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, e.Name()))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) >= 2 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}
