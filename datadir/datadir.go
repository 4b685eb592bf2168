package datadir

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// LockFile is the file in the data dir a serving node holds an exclusive
// flock on: a second `serve` on the same data dir is refused.
const LockFile = "halapi.lock"

// Open creates dir (0700) if it does not exist, locks it (Lock) and runs
// refuse. On any error the lock is released and a dir Open created is
// removed; otherwise the caller holds the lock until it calls release.
func Open(dir string, refuse func() error) (release func(), err error) {
	_, statErr := os.Stat(dir)
	created := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := Lock(dir)
	if err == nil && refuse != nil {
		if err = refuse(); err != nil {
			unlock()
		}
	}
	if err != nil {
		if created {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	return unlock, nil
}

// Protect makes everything this process writes from now on private to
// its user (umask 077: raft's snapshot store creates its files 0644, and
// snapshots hold the JWT key, the CA keys and password hashes), and
// narrows what an older version left readable: the data dir 0700, the
// raft dir (log, snapshots) and the node's pki dir 0700/0600 — except the
// public certificates (*.crt), which stay as they are.
func Protect(dir string) error {
	privateUmask()
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	for _, p := range []string{"raft", "pki"} {
		err := filepath.WalkDir(filepath.Join(dir, p), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				return os.Chmod(path, 0o700)
			case filepath.Ext(path) == ".crt":
				return nil
			default:
				return os.Chmod(path, 0o600)
			}
		})
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}
