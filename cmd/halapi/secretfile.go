package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// writeSecretFile writes data to path readable by the owner only, also
// when path already existed with wider permissions (os.WriteFile keeps
// the mode of an existing file): the mode is narrowed before the secret
// is written.
func writeSecretFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// protectDataDir makes everything a node writes from now on private to
// its user (umask 077: raft's snapshot store creates its files 0644, and
// snapshots hold the JWT key, the CA keys and password hashes), and
// narrows what an older version left readable: the data dir 0700, the
// raft dir (log, snapshots) and the node's pki dir 0700/0600 — except the
// public certificates (*.crt), which stay as they are.
func protectDataDir(dir string) error {
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
