//go:build !linux

package main

import "os/exec"

// setProcAttr has nothing to set outside Linux; servers are still stopped by
// the benchmark's cleanup.
func setProcAttr(*exec.Cmd) {}
