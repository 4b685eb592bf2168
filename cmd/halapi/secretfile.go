package main

import "os"

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
