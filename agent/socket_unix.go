//go:build unix

package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// SocketMode is the mode of the agent's unix socket: the owner (the
// agent's user) and the socket's group may connect, nobody else.
const SocketMode fs.FileMode = 0o660

// maxSocketPath is the longest path a unix socket address holds on Linux
// (sun_path is 108 bytes with the terminating NUL).
const maxSocketPath = 107

// umaskMu serialises the umask change around bind (the umask is the
// process's, not the goroutine's).
var umaskMu sync.Mutex

// ListenSocket opens the agent's unix socket listener at path, for the
// clients that take a socket path as their LAPI URL (crowdsec's
// apiclient: the crowdsec agent and cscli). The socket is created with
// mode 0660 from the start (no moment where it is more open) and given
// to group when that is set (a group name or a numeric ID; the agent must
// be root or a member). A file already at path is removed only if it is a
// socket nobody listens on (a stale one, left by an agent that was
// killed); a live socket or any other file is an error and is left
// alone. The check and the bind hold an flock on the directory, so two
// agents started at once do not both take the socket for stale. The
// socket file is removed when the listener is closed.
func ListenSocket(path, group string) (net.Listener, error) {
	if path == "" || path[0] != '/' {
		return nil, fmt.Errorf("socket path %q: must be absolute (a LAPI URL starting with / is what clients read as a socket)", path)
	}
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %q: longer than %d bytes, the limit of a unix socket address", path, maxSocketPath)
	}
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("socket group %q: %w", group, err)
		}
		gid = g
	}
	// The check for a stale socket and the bind are one step for agents
	// sharing the directory: an flock on the directory (best effort: a
	// directory this process cannot open for reading goes without), so
	// two agents started at once cannot both find the socket stale and
	// the second remove the first's fresh one.
	if unlock := lockDir(filepath.Dir(path)); unlock != nil {
		defer unlock()
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	umaskMu.Lock()
	old := syscall.Umask(0o777 &^ int(SocketMode))
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket %s: group %s: %w", path, group, err)
		}
	}
	// The umask only removes bits: make the mode exact whatever it was.
	if err := os.Chmod(path, SocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	return ln, nil
}

// lockDir takes an exclusive flock on dir, waiting at most 5 s for
// another holder (something else could keep one on the directory); nil
// if it could not.
func lockDir(dir string) (unlock func()) {
	d, err := os.Open(dir)
	if err != nil {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(d.Fd()), syscall.LOCK_UN)
				d.Close()
			}
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			d.Close()
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// removeStaleSocket removes a socket at path that nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("socket %s: a file that is not a socket is in the way (not removed)", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another process listens on it (another halapi agent?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is in use, not removed: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("socket %s: removing the stale socket: %w", path, err)
	}
	return nil
}

func lookupGroup(group string) (int, error) {
	if id, err := strconv.Atoi(group); err == nil {
		if id < 0 {
			return 0, errors.New("negative group ID")
		}
		return id, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}
