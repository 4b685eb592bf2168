package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/models"
	"github.com/halapi/halapi/internal/testharness"
)

// memAddrBase is this topic's loopback address (127.0.0.45).
const memAddrBase = "127.0.0.45"

// mappedFileRSS is the resident size of a process's mappings of path
// (/proc/PID/smaps).
func mappedFileRSS(pid int, path string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var n int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if strings.Contains(fields[0], "-") && len(fields) >= 5 {
			in = len(fields) >= 6 && fields[5] == path
			continue
		}
		if in && fields[0] == "Rss:" && len(fields) >= 2 {
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			n += kb << 10
		}
	}
	return n, sc.Err()
}

// After a big import, once the node is quiet, it returns what it no longer
// needs: the free Go heap goes back to the OS and the raft log's bolt
// mapping is no longer resident (bolt read the entries through it while
// rewriting leaves, which made them count in the node's RSS).
func TestMemIdleTrimAfterImport(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Skip("no /proc/PID/smaps")
	}
	metricsAddr := net.JoinHostPort(memAddrBase, strconv.Itoa(freePortOn(t, memAddrBase, false)))
	s := NewServer(t)
	s.ExtraArgs = append(s.ExtraArgs, "--metrics-listen", metricsAddr)
	s.Start()
	w := addMachine(t, s, "mem-loader", "mem-loader-password-1")

	// Built first and sent back to back: one burst for the node (a pause
	// of a second between two alerts would be a trim of its own, and the
	// rest of the import a burst under the trimmer's 64 MiB).
	const alerts, perAlert = 20, 10_000
	batch := make([]*models.Alert, alerts)
	for a := range batch {
		ds := make([]*models.Decision, perAlert)
		for i := range ds {
			n := a*perAlert + i
			ds[i] = &models.Decision{Origin: ptr("cscli"), Type: ptr("ban"), Scope: ptr("Ip"), Scenario: ptr("e2e-mem"),
				Duration: ptr("4h"), Value: ptr(fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff))}
		}
		batch[a] = csAlert("e2e-mem", "Ip", "192.0.2.1", ds...)
	}
	for _, a := range batch {
		pushAlerts(t, w, a)
	}

	raftDB, err := filepath.EvalSymlinks(filepath.Join(s.DataDir, "raft", "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	scrape := func(name string) float64 {
		v, err := testharness.ScrapeSum(context.Background(), "http://"+metricsAddr+"/metrics", name, "")
		if err != nil {
			t.Fatalf("/metrics %s: %v", name, err)
		}
		return v
	}
	// On a tmpfs the log's pages are shared memory, which only swap can
	// reclaim: check the heap only.
	var st syscall.Statfs_t
	onTmpfs := syscall.Statfs(s.DataDir, &st) == nil && st.Type == 0x01021994
	// Without the trim the free heap stays at tens of MiB and the log's
	// mapping at about the size of the imported entries (~30 MiB here)
	// for minutes.
	// /metrics is scraped at most every 2 s: scraping it back to back
	// would keep the node allocating over the trimmer's quiet bar.
	var free float64 = -1
	var scraped time.Time
	waitFor(t, 60*time.Second, "the idle heap and the raft log's pages returned", func() (bool, string) {
		rss, err := mappedFileRSS(s.Pid(), raftDB)
		if err != nil {
			return false, err.Error()
		}
		if time.Since(scraped) > 2*time.Second {
			free, scraped = scrape("go_memstats_heap_idle_bytes")-scrape("go_memstats_heap_released_bytes"), time.Now()
		}
		return (rss < 4<<20 || onTmpfs) && free >= 0 && free < 16<<20, fmt.Sprintf("raft.db resident %d KiB, free heap not returned %.0f KiB", rss>>10, free/1024)
	})
}
