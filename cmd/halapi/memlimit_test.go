package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMemoryLimit(t *testing.T) {
	none := t.TempDir()
	v2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(v2, "memory.max"), []byte("2147483648\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unlimited := t.TempDir()
	if err := os.WriteFile(filepath.Join(unlimited, "memory.max"), []byte("max\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	v1 := t.TempDir()
	if err := os.MkdirAll(filepath.Join(v1, "memory"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v1, "memory", "memory.limit_in_bytes"), []byte("9223372036854771712\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// systemd: the service's own cgroup holds MemoryMax; the smallest
	// limit on the path wins
	svc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(svc, "system.slice", "halapi.service"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(svc, "system.slice", "halapi.service", "memory.max"), []byte("1073741824\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(svc, "system.slice", "memory.max"), []byte("4294967296\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const svcSelf = "0::/system.slice/halapi.service\n"
	if got, err := memoryLimit("auto", svc, svcSelf); err != nil || got != 1073741824/10*8 {
		t.Errorf("systemd service limit: %d, %v", got, err)
	}
	if got, _ := memoryLimit("auto", svc, "0::/user.slice\n"); got != 0 {
		t.Errorf("another cgroup without a limit: %d", got)
	}
	v1svc := t.TempDir()
	if err := os.MkdirAll(filepath.Join(v1svc, "memory", "docker", "abc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(v1svc, "memory", "docker", "abc", "memory.limit_in_bytes"), []byte("536870912\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := memoryLimit("auto", v1svc, "12:memory:/docker/abc\n11:cpu,cpuacct:/docker/abc\n"); got != 536870912/10*8 {
		t.Errorf("cgroup v1 limit: %d", got)
	}
	for _, c := range []struct {
		v, dir string
		want   int64
		bad    bool
	}{
		{"auto", none, 0, false},
		{"auto", v2, 2147483648 / 10 * 8, false},
		{"", v2, 2147483648 / 10 * 8, false},
		{"auto", unlimited, 0, false},
		{"auto", v1, 0, false},
		{"none", v2, 0, false},
		{"0", v2, 0, false},
		{"768MiB", none, 768 << 20, false},
		{"2GiB", none, 2 << 30, false},
		{"1.5G", none, 3 << 29, false},
		{"1GB", none, 1e9, false},
		{"134217728", none, 128 << 20, false},
		{"10MiB", none, 0, true},
		{"lots", none, 0, true},
		{"1 parsec", none, 0, true},
		{"-1G", none, 0, true},
		{"1e30", none, 0, true},
	} {
		got, err := memoryLimit(c.v, c.dir, "0::/\n")
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("memoryLimit(%q, %s) = %d, %v; want %d, error %v", c.v, filepath.Base(c.dir), got, err, c.want, c.bad)
		}
	}
}
