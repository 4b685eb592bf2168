package capi

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

// BenchmarkBlocklistParse1M is the leader's own work on a downloaded
// 1,000,000-value blocklist before the first entry goes to raft: parse
// and deduplicate the lines, order them by address and cut the entries.
// held-MB is the heap the parsed list keeps alive meanwhile (what every
// collection during the pull scans on top of the FSM's state).
func BenchmarkBlocklistParse1M(b *testing.B) {
	const n = 1_000_000
	// in no particular order (as a list may come), 1% of the values twice
	lines := make([]string, 0, n+n/100)
	for i := range n {
		lines = append(lines, fmt.Sprintf("%d.%d.%d.%d", 1+i>>24, (i>>16)&255, (i>>8)&255, i&255))
	}
	lines = append(lines, lines[:n/100]...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	body := []byte(strings.Join(lines, "\n") + "\n")
	bl := BlocklistLink{Name: "bench", URL: "http://x/", Remediation: "ban", Scope: "ip", Duration: "24h"}
	a := newLocal()
	a.lists.Store(true)
	s := New(Config{}, a.f, a, newLogger(&logBuffer{}))
	now := time.Now()
	var held float64
	b.ReportAllocs()
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		ds, nl, _, err := parseBlocklist(body, bl, now, &allowFilter{})
		if err != nil || nl != len(lines) || len(ds) != n {
			b.Fatalf("parsed %d lines into %d decisions (%v)", nl, len(ds), err)
		}
		chunks := s.importChunks(ds)
		runtime.GC()
		runtime.ReadMemStats(&after)
		held += float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
		if len(chunks) == 0 || chunks[0].typ != fsm.CmdImportList {
			b.Fatalf("%d chunks", len(chunks))
		}
		runtime.KeepAlive(ds)
		runtime.KeepAlive(chunks)
	}
	b.ReportMetric(held/float64(b.N), "held-MB")
}
