package notify

import "syscall"

// procAttr kills the plugin when halapi dies (even by SIGKILL), so a
// crashed leader leaves no plugin behind, and runs it as the configured
// user.
func procAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Credential: cred}
}
