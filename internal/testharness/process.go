package testharness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Process is one run of a program, started again as often as needed with
// the same or another command line, its output appended to one log file.
// Its methods are for one goroutine (the test's or the benchmark's).
type Process struct {
	Bin     string   // the program; read at each Start
	Env     []string // added to this process's environment; read at each Start
	LogPath string   // standard output and error, appended; a line per start, signal

	args   []string
	starts int
	cmd    *exec.Cmd
	done   chan struct{} // closed when the process has exited
	exit   error         // cmd.Wait result, valid once done is closed
}

// Start runs Bin with args. The process is killed by the kernel if this
// one dies (Linux).
func (p *Process) Start(args ...string) error {
	if p.Running() {
		return errors.New("start: already running")
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	p.starts++
	fmt.Fprintf(f, "==== harness: start #%d at %s: %s %s\n", p.starts, time.Now().Format(time.RFC3339Nano),
		p.Bin, strings.Join(args, " "))

	cmd := exec.Command(p.Bin, args...)
	if len(p.Env) > 0 {
		cmd.Env = append(os.Environ(), p.Env...)
	}
	cmd.Stdout = f
	cmd.Stderr = f
	SetProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Bin, err)
	}
	done := make(chan struct{})
	p.args, p.cmd, p.done, p.exit = append([]string(nil), args...), cmd, done, nil
	go func() {
		p.exit = cmd.Wait()
		close(done)
	}()
	return nil
}

// Restart starts the process again with its last command line.
func (p *Process) Restart() error {
	if p.cmd == nil {
		return errors.New("restart: never started")
	}
	return p.Start(p.args...)
}

// Args is the command line of the last start (without the program).
func (p *Process) Args() []string { return p.args }

// Pid is the process id of the last start.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Running reports whether the last start is still running.
func (p *Process) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Done is closed when the last start has exited (nil before any start).
func (p *Process) Done() <-chan struct{} { return p.done }

// Exit is how the last start ended (valid once Done is closed).
func (p *Process) Exit() error { return p.exit }

// Signal sends sig to the running process (SIGSTOP, SIGCONT...).
func (p *Process) Signal(sig os.Signal) error {
	if !p.Running() {
		return fmt.Errorf("signal %v: not running (exit: %v)", sig, p.exit)
	}
	return p.cmd.Process.Signal(sig)
}

// Kill sends SIGKILL (a crash) and waits up to timeout for the process to
// be gone.
func (p *Process) Kill(timeout time.Duration) error {
	if !p.Running() {
		return fmt.Errorf("kill: not running (exit: %v)", p.exit)
	}
	p.Logf("==== harness: SIGKILL at %s\n", time.Now().Format(time.RFC3339Nano))
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("SIGKILL: %w", err)
	}
	return p.wait(timeout, "SIGKILL")
}

// Stop asks the process to end (SIGTERM), and kills it if it is still
// there after timeout. Stopping a process that is not running does nothing.
func (p *Process) Stop(timeout time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.wait(timeout, "SIGTERM") == nil {
		return nil
	}
	p.Logf("==== harness: still running %s after SIGTERM, sending SIGKILL\n", timeout)
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	return p.wait(timeout, "SIGKILL")
}

func (p *Process) wait(timeout time.Duration, after string) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("pid %d still running %s after %s", p.cmd.Process.Pid, timeout, after)
	}
}

// Logf appends a line of the harness's own to the log.
func (p *Process) Logf(format string, args ...any) {
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, format, args...)
}

// LogTail is the last maxBytes of the log ("" when it is empty or
// unreadable), for error messages.
func (p *Process) LogTail(maxBytes int) string {
	data, err := os.ReadFile(p.LogPath)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	if len(data) > maxBytes {
		data = append([]byte("...(truncated)...\n"), data[len(data)-maxBytes:]...)
	}
	return string(data)
}
