//go:build linux

package main

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// tmpfsMagic is statfs's f_type of a tmpfs.
const tmpfsMagic = 0x01021994

// mappingRSS is the resident size of this process's mappings of path.
func mappingRSS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	var n int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if _, _, p, ok := parseMapsLine(l); ok {
			in = p == path
			continue
		}
		if in && strings.HasPrefix(l, "Rss:") {
			kb, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			n += kb << 10
		}
	}
	return n
}

// The raft log's pages, read through a read-only shared mapping as bolt
// does, stop counting in the process's RSS once paged out, and reading
// them again still gives their content.
func TestPageOutFileDropsResidentPages(t *testing.T) {
	dir := t.TempDir()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil && st.Type == tmpfsMagic {
		t.Skip("the temporary directory is a tmpfs: its pages are shared memory, which only swap can reclaim")
	}
	path := filepath.Join(dir, "raft.db")
	const size = 16 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i / 4096)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	sum := 0
	for i := 0; i < size; i += 4096 {
		sum += int(m[i])
	}
	real, _ := filepath.EvalSymlinks(path)
	before := mappingRSS(t, real)
	if before < size/2 {
		t.Fatalf("mapping resident %d bytes after reading it, want most of %d", before, size)
	}
	n, err := pageOutFile(path)
	if errors.Is(err, syscall.EINVAL) {
		t.Skipf("kernel without MADV_PAGEOUT: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("advised %d bytes, want %d", n, size)
	}
	if after := mappingRSS(t, real); after > size/8 {
		t.Fatalf("mapping still resident: %d bytes of %d (before: %d)", after, size, before)
	}
	for i := 0; i < size; i += 4096 {
		if m[i] != byte(i/4096) {
			t.Fatalf("byte %d is %d after the page-out, want %d", i, m[i], byte(i/4096))
		}
	}
	if sum == 0 {
		t.Fatal("read nothing")
	}
}
