package lapi

import (
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/pprof"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/klauspost/compress/gzip"
)

// benchDecisions builds n stored-like decisions without an FSM.
func benchDecisions(n int) []*fsm.Decision {
	ds := make([]*fsm.Decision, n)
	until := time.Now().Add(24 * time.Hour).UnixNano()
	for i := range ds {
		ip := uint32(11)<<24 | uint32((uint64(i)*2654435761)&(1<<24-1))
		ds[i] = &fsm.Decision{ID: int64(i + 1), UUID: fsm.MustUUID(fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)), Origin: "cscli-import",
			Type: "ban", Scope: "Ip", Scenario: "import", Until: until - int64(i)*1e6,
			Value: fmt.Sprintf("%d.%d.%d.%d", ip>>24, ip>>16&255, ip>>8&255, ip&255)}
	}
	return ds
}

func encodeAll(ds []*fsm.Decision, sink func([]byte)) {
	enc := chunkEncoder{buf: make([]byte, 0, chunkSize+chunkSlack), sink: func(b []byte) ([]byte, bool) { sink(b); return b[:0], true }}
	enc.stream(nil, ds, time.Now().UnixNano())
	enc.finish()
}

// BenchmarkStartupEncode: the JSON encoding of a startup answer
// (SetBytes: the body size, so MB/s is the encoder's throughput).
func BenchmarkStartupEncode(b *testing.B) {
	ds := benchDecisions(300000)
	var size int64
	encodeAll(ds, func(p []byte) { size += int64(len(p)) })
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		encodeAll(ds, func([]byte) {})
	}
}

// BenchmarkStartupGzip compares the compressors on the encoded body.
func BenchmarkStartupGzip(b *testing.B) {
	ds := benchDecisions(300000)
	var chunks [][]byte
	var size int64
	encodeAll(ds, func(p []byte) { chunks = append(chunks, append([]byte(nil), p...)); size += int64(len(p)) })
	run := func(b *testing.B, w io.WriteCloser, reset func()) {
		b.SetBytes(size)
		for i := 0; i < b.N; i++ {
			reset()
			for _, c := range chunks {
				_, _ = w.Write(c)
			}
			_ = w.Close()
		}
	}
	var out countW
	b.Run("klauspost-1", func(b *testing.B) {
		zw, _ := gzip.NewWriterLevel(&out, gzip.BestSpeed)
		run(b, zw, func() { zw.Reset(&out) })
		b.ReportMetric(float64(size)/float64(out.n/int64(b.N)), "ratio")
	})
	b.Run("stdlib-1", func(b *testing.B) {
		out.n = 0
		zw, _ := stdgzip.NewWriterLevel(&out, stdgzip.BestSpeed)
		run(b, zw, func() { zw.Reset(&out) })
		b.ReportMetric(float64(size)/float64(out.n/int64(b.N)), "ratio")
	})
	b.Run("stdlib-default", func(b *testing.B) {
		out.n = 0
		zw, _ := stdgzip.NewWriterLevel(&out, stdgzip.DefaultCompression)
		run(b, zw, func() { zw.Reset(&out) })
		b.ReportMetric(float64(size)/float64(out.n/int64(b.N)), "ratio")
	})
}

// discardWriter is a ResponseWriter that only counts (a socket that
// keeps up).
type discardWriter struct {
	h http.Header
	n int64
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { d.n += int64(len(p)); return len(p), nil }

type countW struct{ n int64 }

func (c *countW) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// BenchmarkStartupStreamHandler: one startup stream of 300,000 decisions
// (STREAM_BENCH_N to change)
// through the handler (FSM walk, encoding, copy), a fresh encoding each
// time.
func BenchmarkStartupStreamHandler(b *testing.B) {
	t := &testing.T{}
	e := newEnv(t)
	e.t = t
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	n := 300000
	if v, err := strconv.Atoi(os.Getenv("STREAM_BENCH_N")); err == nil && v > 0 {
		n = v // e.g. 1000000 for the scale figure
	}
	for i := 0; i < n/10000; i++ {
		ds := make([]any, 10000)
		for j := range ds {
			k := i*10000 + j
			ds[j] = map[string]any{"duration": "24h", "origin": "cscli-import", "scenario": "import",
				"scope": "Ip", "type": "ban", "value": fmt.Sprintf("11.%d.%d.%d", k>>16&255, k>>8&255, k&255)}
		}
		a := manualAlert("Ip", "10.0.0.0", "ban", "1h", e.now())
		a["decisions"] = ds
		e.expect(e.do("POST", "/v1/alerts", []any{a}, withToken(tok)), 201)
	}
	if p := os.Getenv("STREAM_CPUPROFILE"); p != "" {
		f, _ := os.Create(p)
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	flt := &fsm.DecisionFilter{Contains: true, Scopes: []string{"Ip", "Range"}}
	b.Run("fsm-walk", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			e.fsm.Stream(flt, fsm.StreamCursor{}, true, e.now())
		}
	})
	b.Run("encode", func(b *testing.B) {
		newD, deleted, _ := e.fsm.Stream(flt, fsm.StreamCursor{}, true, e.now())
		var size int64
		for i := 0; i < b.N; i++ {
			size = 0
			enc := chunkEncoder{buf: make([]byte, 0, chunkSize+chunkSlack), sink: func(p []byte) ([]byte, bool) { size += int64(len(p)); return p[:0], true }}
			enc.stream(deleted, newD, e.now().UnixNano())
			enc.finish()
		}
		b.SetBytes(size)
	})
	// Release each encoding right after it (as a server does between
	// startups more than the window apart): its chunks are then reused,
	// not collected.
	e.srv.startups.window = time.Millisecond
	for _, gz := range []string{"identity", "gzip"} {
		b.Run(gz, func(b *testing.B) {
			c0 := processCPU()
			defer func() { b.ReportMetric(float64(processCPU()-c0)/float64(b.N)/1e6, "cpu-ms/op") }()
			for i := 0; i < b.N; i++ {
				e.advance(2 * time.Second)
				req := httptest.NewRequest("GET", "/v1/decisions/stream?startup=true", nil)
				req.RemoteAddr = "127.0.0.1:4242"
				req.Header.Set("X-Api-Key", "key1")
				req.Header.Set("Accept-Encoding", gz)
				w := &discardWriter{h: http.Header{}}
				e.h.ServeHTTP(w, req)
				b.SetBytes(w.n)
			}
		})
	}
}

func BenchmarkAppendString(b *testing.B) {
	ds := benchDecisions(1000)
	for _, c := range []struct {
		name string
		f    func([]byte, string) []byte
	}{{"table", appendString}, {"legacy", legacyAppendString}} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, 0, 1<<20)
			for i := 0; i < b.N; i++ {
				buf = buf[:0]
				for _, d := range ds {
					buf = c.f(buf, d.Value)
					buf = c.f(buf, d.Scenario)
					buf = c.f(buf, d.Origin)
				}
			}
		})
	}
}

// processCPU is the CPU time (user + system, every thread) the process has
// used: on a shared machine a steadier figure than the wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSmallAnswers: the per-request answers the query bench and
// polling bouncers make (a one-decision live query, an empty and a
// one-decision delta), for their allocations and time.
func BenchmarkSmallAnswers(b *testing.B) {
	t := &testing.T{}
	e := newEnv(t)
	e.t = t
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 100)
	e.get(context.Background(), "/v1/decisions/stream?startup=true")
	for _, c := range []struct{ name, path string }{
		{"live-one", "/v1/decisions?ip=10.0.0.5"},
		{"delta", "/v1/decisions/stream"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				req := httptest.NewRequest("GET", c.path, nil)
				req.RemoteAddr = "127.0.0.1:4242"
				req.Header.Set("X-Api-Key", "key1")
				w := &discardWriter{h: http.Header{}}
				e.h.ServeHTTP(w, req)
			}
		})
	}
}
