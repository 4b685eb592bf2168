//go:build linux

package main

import (
	"os/exec"
	"syscall"
)

// setProcAttr makes the kernel kill a server if the benchmark process dies
// (kill -9, go test timeout), so no halapi process outlives the run.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
