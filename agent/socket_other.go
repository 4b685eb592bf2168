//go:build !unix

package agent

import (
	"errors"
	"io/fs"
	"net"
)

// SocketMode is the mode of the agent's unix socket (unix only).
const SocketMode fs.FileMode = 0o660

// ListenSocket is unix-only.
func ListenSocket(path, group string) (net.Listener, error) {
	return nil, errors.New("--socket: unix sockets need a unix system")
}
