package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// fileRSS sums the resident pages of each mapped file of a process
// (/proc/<pid>/smaps), largest first, as "name N MiB" ("" when it cannot
// be read): it tells the bolt raft log's mmap from the binary's text.
func fileRSS(pid int) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return ""
	}
	defer f.Close()
	sums := map[string]int64{}
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if strings.Contains(fields[0], "-") && len(fields) >= 5 {
			// A mapping's header: address perms offset dev inode [path].
			cur = ""
			if len(fields) >= 6 && strings.HasPrefix(fields[5], "/") {
				cur = filepath.Base(fields[5])
			}
			continue
		}
		if fields[0] == "Rss:" && cur != "" && len(fields) >= 2 {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			sums[cur] += kb << 10
		}
	}
	names := make([]string, 0, len(sums))
	for n, v := range sums {
		if v >= 1<<20 {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int { return int(sums[b]>>10 - sums[a]>>10) })
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = fmt.Sprintf("%s %.0f MiB", n, mib(sums[n]))
	}
	return strings.Join(parts, ", ")
}
