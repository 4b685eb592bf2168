//go:build linux

package main

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"syscall"
)

// madvPageout is MADV_PAGEOUT (Linux 5.4+): reclaim the pages of a range;
// file pages are written back if dirty and dropped, anonymous ones
// swapped out. Contents are never lost, unlike MADV_DONTNEED on an
// anonymous mapping — which matters because bolt may unmap and remap its
// file between our reading /proc/self/maps and the call, and the range
// could then hold something else.
const madvPageout = 21

// pageOutFile asks the kernel to reclaim this process's resident pages of
// every mapping of path (as listed by /proc/self/maps); it returns the
// bytes of the ranges advised.
func pageOutFile(path string) (int64, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return 0, err
	}
	if real, err = filepath.Abs(real); err != nil {
		return 0, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var ranges [][2]uintptr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		start, end, p, ok := parseMapsLine(sc.Text())
		if ok && p == real {
			ranges = append(ranges, [2]uintptr{start, end})
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	var n int64
	var errs []error
	for _, r := range ranges {
		if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, r[0], r[1]-r[0], madvPageout); e != 0 {
			errs = append(errs, e)
			continue
		}
		n += int64(r[1] - r[0])
	}
	return n, errors.Join(errs...)
}
