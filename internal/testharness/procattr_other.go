//go:build !linux

package testharness

import "os/exec"

// SetProcAttr has nothing to set outside Linux: the harness stops its
// processes itself.
func SetProcAttr(*exec.Cmd) {}
