package datadir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Open: a refused start releases the lock and removes the dir it
// created, but never a dir that was there; a held lock refuses a second
// Open.
func TestOpenRefusesAndCleansUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := Open(dir, func() error { return errors.New("port in use") }); err == nil || err.Error() != "port in use" {
		t.Fatalf("refusal: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused fresh start left %s: %v", dir, err)
	}
	release, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", err, fi.Mode())
	}
	if _, err := Open(dir, nil); err == nil || !strings.Contains(err.Error(), "in use by another halapi process") {
		t.Fatalf("second open: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("a refused open removed a dir it did not create: %v", err)
	}
	release()
	if _, err := Open(dir, func() error { return errors.New("no") }); err == nil {
		t.Fatal("refusal ignored")
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("an existing dir was removed on refusal: %v", err)
	}
	release, err = Open(dir, nil)
	if err != nil {
		t.Fatalf("lock not released after a refusal: %v", err)
	}
	release()
}

func TestProtect(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"raft/snapshots", "pki"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for p, mode := range map[string]os.FileMode{"raft/raft.db": 0o644, "pki/node.key": 0o644, "pki/ca.crt": 0o644} {
		if err := os.WriteFile(filepath.Join(dir, p), nil, mode); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(filepath.Join(dir, p), mode)
	}
	if err := Protect(dir); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{".": 0o700, "raft": 0o700, "raft/snapshots": 0o700, "raft/raft.db": 0o600,
		"pki/node.key": 0o600, "pki/ca.crt": 0o644} {
		if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", p, err, fi.Mode().Perm(), want)
		}
	}
}
