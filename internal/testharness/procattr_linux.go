//go:build linux

package testharness

import (
	"os/exec"
	"syscall"
)

// SetProcAttr makes the kernel kill the process if its parent dies (kill
// -9, go test timeout), so no halapi process outlives the run.
func SetProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
