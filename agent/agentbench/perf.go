package agentbench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Counts are a process's kernel counters over a measurement window, per
// request (Options.Perf: `perf stat`).
type Counts struct {
	Syscalls float64 `json:"syscalls"` // raw_syscalls:sys_enter
	Switches float64 `json:"switches"` // context switches
	Wakeups  float64 `json:"wakeups"`  // sched:sched_wakeup in its threads' context: threads it woke
	// Extra are the Options.PerfEvents, by name.
	Extra map[string]float64 `json:"extra,omitempty"`
}

// perfEvents are what Options.Perf counts, in Counts' order.
var perfEvents = []string{"raw_syscalls:sys_enter", "context-switches", "sched:sched_wakeup"}

// PerfAvailable reports why Options.Perf cannot run here ("" if it can).
func PerfAvailable() string {
	if _, err := exec.LookPath("perf"); err != nil {
		return "needs the perf command"
	}
	if os.Geteuid() != 0 {
		return "needs root (tracepoints of other processes)"
	}
	return ""
}

// perfStat counts perfEvents for one process between enable and
// disable: `perf stat` starts with its events off (--delay=-1) and is
// switched through its control descriptors, each command acknowledged, so
// the window is exactly the measured one (no attach delay inside it).
type perfStat struct {
	cmd      *exec.Cmd
	ctl, ack *os.File
	ackR     *bufio.Reader
	out      bytes.Buffer
}

func startPerf(pid int, extra []string) (*perfStat, error) {
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil, err
	}
	p := &perfStat{ctl: ctlW, ack: ackR, ackR: bufio.NewReader(ackR)}
	p.cmd = exec.Command("perf", "stat", "-x,", "--no-big-num", "--delay=-1", "--control=fd:3,4",
		"-e", strings.Join(append(slices.Clone(perfEvents), extra...), ","), "-p", strconv.Itoa(pid))
	p.cmd.ExtraFiles = []*os.File{ctlR, ackW}
	p.cmd.Stderr = &p.out
	err = p.cmd.Start()
	ctlR.Close()
	ackW.Close()
	if err != nil {
		ctlW.Close()
		ackR.Close()
		return nil, err
	}
	return p, nil
}

func (p *perfStat) command(c string) error {
	if _, err := p.ctl.WriteString(c + "\n"); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		line, err := p.ackR.ReadString('\n')
		if err == nil && strings.Trim(line, "\x00 \n") != "ack" {
			err = fmt.Errorf("perf answered %q", line)
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		return fmt.Errorf("perf did not acknowledge %q", c)
	}
}

// stop ends perf and returns its counts (not yet per request).
func (p *perfStat) stop() (Counts, error) {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	werr := p.cmd.Wait()
	p.ctl.Close()
	p.ack.Close()
	var c Counts
	found := 0
	for _, line := range strings.Split(p.out.String(), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if f[0] == "<not counted>" { // the process did nothing in the window
			v, err = 0, nil
		}
		if err != nil {
			continue
		}
		switch f[2] {
		case perfEvents[0]:
			c.Syscalls, found = v, found+1
		case perfEvents[1]:
			c.Switches, found = v, found+1
		case perfEvents[2]:
			c.Wakeups, found = v, found+1
		default:
			if c.Extra == nil {
				c.Extra = map[string]float64{}
			}
			c.Extra[f[2]] = v
		}
	}
	if found != len(perfEvents) {
		if werr == nil {
			werr = errors.New("missing counters")
		}
		return c, fmt.Errorf("perf stat: %v: %s", werr, strings.TrimSpace(p.out.String()))
	}
	return c, nil
}

// perfGroup counts several processes over one window.
type perfGroup []*perfStat

func startPerfGroup(extra []string, pids ...int) (perfGroup, error) {
	var g perfGroup
	for _, pid := range pids {
		p, err := startPerf(pid, extra)
		if err != nil {
			g.abort()
			return nil, err
		}
		g = append(g, p)
	}
	return g, nil
}

func (g perfGroup) command(c string) error {
	for _, p := range g {
		if err := p.command(c); err != nil {
			return err
		}
	}
	return nil
}

func (g perfGroup) abort() {
	for _, p := range g {
		_, _ = p.stop()
	}
}

// stop returns each process's counts divided by n requests.
func (g perfGroup) stop(n float64) ([]Counts, error) {
	out := make([]Counts, len(g))
	var first error
	for i, p := range g {
		c, err := p.stop()
		if err != nil && first == nil {
			first = err
		}
		out[i] = Counts{Syscalls: c.Syscalls / n, Switches: c.Switches / n, Wakeups: c.Wakeups / n}
		for k, v := range c.Extra {
			if out[i].Extra == nil {
				out[i].Extra = map[string]float64{}
			}
			out[i].Extra[k] = v / n
		}
	}
	return out, first
}
