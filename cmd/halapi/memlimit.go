package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// memoryLimit resolves --memory-limit into the Go soft memory limit
// (GOMEMLIMIT) to set, in bytes; 0 means none.
//
//   - "auto" (the default): 80% of the memory limit of the cgroup the node
//     runs in (a container, systemd's MemoryMax), read under cgroupDir
//     along the path selfCgroup (/proc/self/cgroup) names; none when
//     there is no such limit. The rest is headroom for what the
//     Go runtime does not count (stacks in flight, the raft log cache's
//     mmaps are outside the heap anyway) so the kernel's OOM killer is
//     not reached before the collector works harder. A machine without a
//     cgroup limit is shared with other programs: taking a share of its
//     RAM would only make the collector work for nothing.
//   - "none" or "0": no limit.
//   - a size: bytes, or with a unit (KiB, MiB, GiB, TiB, or KB, MB, GB,
//     TB as powers of 1000; K/M/G/T alone are binary, as in GOMEMLIMIT).
//
// The limit is soft: the heap still grows past it when the live data
// needs it (the collector then runs more often, bounded by the runtime at
// half the CPU), so a too low value costs CPU, not correctness.
func memoryLimit(v, cgroupDir, selfCgroup string) (int64, error) {
	v = strings.TrimSpace(v)
	switch strings.ToLower(v) {
	case "none", "0", "off":
		return 0, nil
	case "auto", "":
		if n := cgroupMemoryMax(cgroupDir, selfCgroup); n > 0 {
			return n / 10 * 8, nil
		}
		return 0, nil
	}
	n, err := parseSize(v)
	if err != nil {
		return 0, fmt.Errorf("invalid --memory-limit %q: want auto, none or a size such as 768MiB or 2GiB", v)
	}
	if n < 64<<20 {
		return 0, fmt.Errorf("--memory-limit %q is below 64MiB: the node would do nothing but collect garbage", v)
	}
	return n, nil
}

func parseSize(v string) (int64, error) {
	i := strings.IndexFunc(v, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := v, ""
	if i >= 0 {
		num, unit = v[:i], strings.TrimSpace(v[i:])
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("bad number")
	}
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12}[strings.ToLower(unit)]
	if mult == 0 {
		return 0, fmt.Errorf("bad unit")
	}
	b := f * mult
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("too large")
	}
	return int64(b), nil
}

// cgroupMemoryMax returns the smallest memory limit on the process's
// cgroup path (v2 memory.max, or v1 memory.limit_in_bytes), from its own
// cgroup up to dir, the cgroup filesystem root; 0 when unlimited or
// unknown. selfCgroup is the content of /proc/self/cgroup ("0::/path" for
// v2, "N:memory:/path" for v1): inside a container the path is "/", under
// systemd it names the service, whose MemoryMax is its memory.max.
func cgroupMemoryMax(dir, selfCgroup string) int64 {
	v2, v1 := "/", "/"
	for _, l := range strings.Split(selfCgroup, "\n") {
		parts := strings.SplitN(strings.TrimSpace(l), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1 = parts[2]
			}
		}
	}
	var best int64
	walk := func(base, path, file string) {
		path = filepath.Clean("/" + path)
		for {
			if n := readLimit(filepath.Join(base, path, file)); n > 0 && (best == 0 || n < best) {
				best = n
			}
			if path == "/" {
				return
			}
			path = filepath.Dir(path)
		}
	}
	walk(dir, v2, "memory.max")
	walk(filepath.Join(dir, "memory"), v1, "memory.limit_in_bytes")
	return best
}

// readLimit reads one cgroup limit file: 0 when absent, "max" or
// unlimited (v1 reports that as a number near 2^63).
func readLimit(p string) int64 {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0
	}
	return n
}
