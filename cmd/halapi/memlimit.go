package main

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// memoryLimit resolves --memory-limit into the Go soft memory limit
// (GOMEMLIMIT) to set, in bytes; 0 means none.
//
//   - "auto" (the default): 80% of the memory limit of the cgroup the node
//     runs in (a container, systemd's MemoryMax), read from cgroupDir;
//     none when there is no such limit. The rest is headroom for what the
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
func memoryLimit(v, cgroupDir string) (int64, error) {
	v = strings.TrimSpace(v)
	switch strings.ToLower(v) {
	case "none", "0", "off":
		return 0, nil
	case "auto", "":
		if n := cgroupMemoryMax(cgroupDir); n > 0 {
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

// cgroupMemoryMax returns the memory limit of the process's cgroup (v2
// memory.max, else v1 memory.limit_in_bytes), 0 when unlimited or
// unknown. Only the cgroup filesystem root is looked at: inside a
// container that is the container's own cgroup.
func cgroupMemoryMax(dir string) int64 {
	for _, p := range []string{dir + "/memory.max", dir + "/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 { // v1 reports "unlimited" as a huge number
			return 0
		}
		return n
	}
	return 0
}
