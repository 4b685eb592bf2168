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
	"time"
)

// A burst of allocation is followed by one trim once it is over; steady
// small allocation neither triggers one nor holds one back for ever; a
// collection forced by someone else (the stream scavenger) counts as one.
func TestTrimmerAfterABurst(t *testing.T) {
	var cur trimSample
	trims := 0
	tr := newTrimmer(func() trimSample { return cur }, func() { trims++; cur.forced++ })
	now := time.Unix(0, 0)
	step := func(alloc uint64) bool {
		cur.allocs += alloc
		now = now.Add(trimTick)
		return tr.tick(now)
	}
	step(0)
	perTick := func(rate float64) uint64 { return uint64(rate * trimTick.Seconds()) }
	for range 100 { // 50 s of a lightly loaded node: 200 KB/s
		step(perTick(200 << 10))
	}
	if trims != 0 {
		t.Fatal("trimmed after small allocations only")
	}
	for range 20 { // an import: 40 MiB/s for 10 s
		if step(perTick(40 << 20)) {
			t.Fatal("trimmed during the import")
		}
	}
	// Over: small allocations go on. No trim before trimQuiet has passed.
	quietTicks := int(trimQuiet / trimTick)
	for i := range quietTicks {
		trimmed := step(perTick(200 << 10))
		if trimmed != (i == quietTicks-1) {
			t.Fatalf("tick %d after the import: trimmed %v", i+1, trimmed)
		}
	}
	for range 100 {
		step(perTick(200 << 10))
	}
	if trims != 1 {
		t.Fatalf("%d trims, want still 1", trims)
	}

	// A pause shorter than trimQuiet inside a burst does not trim.
	for range 10 {
		step(perTick(40 << 20))
	}
	for range quietTicks - 1 {
		step(0)
	}
	for range 10 {
		step(perTick(40 << 20))
	}
	if trims != 1 {
		t.Fatalf("trimmed in a %s pause of a burst", trimQuiet-trimTick)
	}

	// With a big live heap a burst must allocate half of it: a node
	// holding 1 GiB that allocated 300 MiB is left to the runtime.
	cur.live = 1 << 30
	for range 10 {
		step(30 << 20)
	}
	for range 3 * quietTicks {
		step(0)
	}
	if trims != 1 {
		t.Fatalf("trimmed after allocating under half the live heap")
	}
	for range 10 {
		step(30 << 20)
	}
	for range quietTicks {
		step(0)
	}
	if trims != 2 {
		t.Fatalf("%d trims after allocating more than half of a 1 GiB live heap, want 2", trims)
	}
	cur.live = 0

	// Someone else forces a collection right after the burst: nothing left
	// to trim.
	for range 10 {
		step(perTick(40 << 20))
	}
	cur.forced++
	for range 3 * quietTicks {
		step(0)
	}
	if trims != 2 {
		t.Fatalf("%d trims after a forced collection, want 2", trims)
	}
}

func TestParseMapsLine(t *testing.T) {
	for _, c := range []struct {
		line, path string
		start      uintptr
		ok         bool
	}{
		{"7f1c2a000000-7f1c2a200000 r--s 00000000 fd:01 1234                       /var/lib/halapi/raft/raft.db", "/var/lib/halapi/raft/raft.db", 0x7f1c2a000000, true},
		{"7f1c2a000000-7f1c2a200000 r--s 00000000 fd:01 1234   /data/a dir/raft.db", "/data/a dir/raft.db", 0x7f1c2a000000, true},
		{"c000000000-c004000000 rw-p 00000000 00:00 0 ", "", 0xc000000000, true},
		{"garbage", "", 0, false},
		{"zz-10 r--s 0 0 0 /x", "", 0, false},
	} {
		s, _, p, ok := parseMapsLine(c.line)
		if ok != c.ok || (ok && (p != c.path || s != c.start)) {
			t.Errorf("%q: %x %q %v", c.line, s, p, ok)
		}
	}
}

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
