package lapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/internal/testutil"
)

func gunzipString(t *testing.T, b []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gzip body: %v", err)
	}
	return string(out)
}

// The allocation-free duration writer matches Duration.Round(s).String().
func TestAppendRemaining(t *testing.T) {
	cases := []int64{0, 1, -1, 499_999_999, 500_000_000, -500_000_000, 1e9, -1e9, 59e9, 59_500_000_000, 60e9, 3599e9, 3600e9,
		-3600e9, 36*3600e9 + 30*60e9 + 10e9, 100000 * 3600e9, math.MaxInt64, math.MinInt64 + 1, math.MaxInt64 - 1e9}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		cases = append(cases, r.Int64N(2*400*24*3600e9)-400*24*3600e9, r.Int64N(200e9)-100e9)
	}
	for _, d := range cases {
		want := remaining(d, 0)
		if got := string(appendRemaining(nil, d, 0)); got != want {
			t.Fatalf("%d ns: %q, want %q", d, got, want)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for v, want := range map[string]bool{"": false, "gzip": true, "deflate, gzip": true, "gzip;q=0": false, "GZIP; q=0.5": true,
		"br": false, "x-gzip": true, "gzip ; q=0.000": false, "identity": false, "*": false} {
		r := httptest.NewRequest("GET", "/", nil)
		if v != "" {
			r.Header.Set("Accept-Encoding", v)
		}
		if got := acceptsGzip(r); got != want {
			t.Errorf("Accept-Encoding %q: %v, want %v", v, got, want)
		}
	}
}

// loadDecisions stores n IP ban decisions in one alert.
func loadDecisions(e *env, tok string, n int) {
	e.t.Helper()
	ds := make([]any, n)
	for i := range ds {
		ds[i] = map[string]any{"duration": fmt.Sprintf("%dh", 1+i%48), "origin": "cscli-import", "scenario": "import",
			"scope": "Ip", "type": "ban", "value": fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}
	}
	a := manualAlert("Ip", "10.0.0.0", "ban", "1h", e.now())
	a["decisions"] = ds
	e.expect(e.do("POST", "/v1/alerts", []any{a}, withToken(tok)), 201)
}

// wholeBody encodes a startup answer in one buffer, as the encoder did
// before streaming: the chunked and shared bodies must equal it.
func wholeBody(e *env, f *fsm.DecisionFilter) string {
	newD, deleted, _ := e.fsm.Stream(f, fsm.StreamCursor{}, true, e.now())
	enc := chunkEncoder{sink: func(b []byte) ([]byte, bool) { return b, true }}
	enc.stream(deleted, newD, e.now().UnixNano())
	return string(enc.buf)
}

// A long answer lets other goroutines run between its chunks; a short
// one (a point query) is handed over without yielding the P, which would
// queue its end behind every runnable goroutine of a busy node.
func TestEncoderYieldsOnlyBetweenChunks(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	until := now.Add(time.Hour).UnixNano()
	mk := func(n int) []*fsm.Decision {
		ds := make([]*fsm.Decision, n)
		for i := range ds {
			ds[i] = &fsm.Decision{ID: int64(i + 1), Origin: "crowdsec", Type: "ban", Scope: "Ip", Scenario: "ssh-bf",
				Value: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Until: until}
		}
		return ds
	}
	for _, n := range []int{1, 5000} {
		yields, sinks, size := 0, 0, 0
		enc := chunkEncoder{sink: func(b []byte) ([]byte, bool) { sinks++; size += len(b); return b[:0], true },
			yield: func() { yields++ }}
		enc.decisions(mk(n), now.UnixNano(), true)
		if !enc.finish() {
			t.Fatalf("%d decisions: finish failed", n)
		}
		if sinks == 0 || yields != sinks-1 {
			t.Fatalf("%d decisions (%d bytes): %d chunks handed over, %d yields; want one yield between chunks, none after the last",
				n, size, sinks, yields)
		}
		if n > 1 && sinks < 2 {
			t.Fatalf("%d decisions (%d bytes) in %d chunk: the test wants several", n, size, sinks)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, what, cond)
}

// get runs one request on the handler with its own context.
func (e *env) get(ctx context.Context, path string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", path, nil).WithContext(ctx)
	req.RemoteAddr = "127.0.0.1:4242"
	req.Header.Set("User-Agent", "crowdsec-firewall-bouncer/v0.0.31")
	req.Header.Set("X-Api-Key", "key1")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	return w
}

// Concurrent startups of the same list share one encoding (and one
// compression); the encoding is released once no request holds it, and
// the scavenger then runs once.
func TestStartupStormSharesOneEncoding(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 3000) // ~500 kB: several chunks
	c := e.srv.startups
	var freed atomic.Int64
	e.srv.scav.free = func() { freed.Add(1) }
	e.srv.scav.quiet = 10 * time.Millisecond
	e.srv.scav.min = 1
	c.window = 50 * time.Millisecond
	// the list is encoded in parts on several cores (as a million would be)
	oldMin, oldPart := parallelMin, partDecisions
	parallelMin, partDecisions = 1000, 300
	defer func() { parallelMin, partDecisions = oldMin, oldPart }()
	want := wholeBody(e, &fsm.DecisionFilter{Contains: true, Scopes: []string{"Ip", "Range"}})
	if len(want) < 3*chunkSize {
		t.Fatalf("test list too small: %d bytes", len(want))
	}

	// Hold every slot, so all requests pile up on one queued encoding.
	for i := 0; i < cap(c.slots); i++ {
		c.slots <- struct{}{}
	}
	const n = 20
	bodies := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				bodies[i] = e.get(context.Background(), "/v1/decisions/stream?startup=true", "Accept-Encoding", "gzip")
			} else {
				bodies[i] = e.get(context.Background(), "/v1/decisions/stream?startup=true")
			}
		}()
	}
	waitFor(t, "all requests queued on one encoding", func() bool { return c.joins.Load() == n-1 })
	if c.waiting.Load() != 1 {
		t.Fatalf("%d encodings queued, want 1", c.waiting.Load())
	}
	for i := 0; i < cap(c.slots); i++ {
		<-c.slots
	}
	wg.Wait()
	if got := c.builds.Load(); got != 1 {
		t.Errorf("%d encodings for %d identical startups, want 1", got, n)
	}
	for i, w := range bodies {
		body := w.Body.String()
		if i%2 == 0 {
			if w.Header().Get("Content-Encoding") != "gzip" {
				t.Fatalf("request %d asked for gzip, got %q", i, w.Header().Get("Content-Encoding"))
			}
			if w.Body.Len() > len(want)/3 {
				t.Errorf("gzip body %d bytes for %d raw", w.Body.Len(), len(want))
			}
			body = gunzipString(t, w.Body.Bytes())
		} else if w.Header().Get("Content-Encoding") != "" {
			t.Fatalf("request %d did not ask for gzip, got %q", i, w.Header().Get("Content-Encoding"))
		}
		if w.Code != 200 || body != want {
			t.Fatalf("request %d: status %d, body of %d bytes differs from the whole-buffer encoding (%d bytes)", i, w.Code, len(body), len(want))
		}
	}
	// Once the window is over and nobody holds it, the encoding is
	// released and the scavenger runs once.
	waitFor(t, "the shared encoding released", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.live == 0 && len(c.byKey) == 0 && c.held.Load() == 0
	})
	waitFor(t, "the scavenger", func() bool { return freed.Load() == 1 })

	// A request after the window encodes again; the complete body is
	// sent with a Content-Length.
	w := e.get(context.Background(), "/v1/decisions/stream?startup=true")
	if w.Body.String() != want || c.builds.Load() != 2 {
		t.Fatalf("later startup: %d bytes, %d builds", w.Body.Len(), c.builds.Load())
	}
}

// A request never gets an encoding of an older state than the one it
// saw on arrival, nor one older than the window.
func TestStartupSharingFreshness(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 10)
	c := e.srv.startups
	c.window = time.Hour // real time: only the index and the test clock decide
	get := func() string {
		t.Helper()
		w := e.get(context.Background(), "/v1/decisions/stream?startup=true")
		if w.Code != 200 {
			t.Fatalf("status %d", w.Code)
		}
		return w.Body.String()
	}
	get()
	get()
	if c.builds.Load() != 1 || c.joins.Load() != 1 {
		t.Fatalf("same index, same second: %d builds, %d joins; want 1, 1", c.builds.Load(), c.joins.Load())
	}
	e.expect(e.do("POST", "/v1/alerts", []any{manualAlert("Ip", "9.9.9.9", "ban", "1h", e.now())}, withToken(tok)), 201)
	if body := get(); !strings.Contains(body, `"value":"9.9.9.9"`) || c.builds.Load() != 2 {
		t.Fatalf("after a write: %d builds, new decision missing: %v", c.builds.Load(), !strings.Contains(body, "9.9.9.9"))
	}
	e.advance(1500 * time.Millisecond) // the stored "duration"s would be 1.5 s off
	c.window = time.Second
	get()
	if c.builds.Load() != 3 {
		t.Fatalf("after the window: %d builds, want 3", c.builds.Load())
	}
	// other filters never share
	w := e.get(context.Background(), "/v1/decisions/stream?startup=true&origins=cscli")
	if c.builds.Load() != 4 || !strings.Contains(w.Body.String(), "9.9.9.9") || strings.Contains(w.Body.String(), "cscli-import") {
		t.Fatalf("origins filter: %d builds, body %.200s", c.builds.Load(), w.Body.String())
	}
}

// Startup encodings beyond the limit queue; a queued request whose client
// gives up leaves without an answer and its encoding is never made.
func TestStartupQueueBoundedByContext(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StartupEncodings = 1 })
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 10)
	c := e.srv.startups
	c.slots <- struct{}{} // the one slot is busy
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- e.get(ctx, "/v1/decisions/stream?startup=true") }()
	waitFor(t, "the request queued", func() bool { return c.waiting.Load() == 1 })
	select {
	case w := <-done:
		t.Fatalf("answered while no slot was free: %d %q", w.Code, w.Body.String())
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	w := <-done
	if w.Body.Len() != 0 {
		t.Fatalf("a cancelled request got a body: %q", w.Body.String())
	}
	waitFor(t, "the abandoned encoding dropped", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.live == 0 && c.waiting.Load() == 0
	})
	if c.builds.Load() != 0 {
		t.Fatalf("%d encodings made for a request that left", c.builds.Load())
	}
	<-c.slots
	if w := e.get(context.Background(), "/v1/decisions/stream?startup=true"); w.Code != 200 || c.builds.Load() != 1 {
		t.Fatalf("after the slot is free: %d, %d builds", w.Code, c.builds.Load())
	}
}

// Delta streams and live queries are written chunk by chunk: a big live
// answer equals the whole-buffer encoding, gzip or not, and a delta that
// could not be written does not advance the bouncer's cursor.
func TestPerRequestAnswersStreamed(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 2000)
	ds := e.fsm.Decisions(&fsm.DecisionFilter{Contains: true}, e.now())
	enc := chunkEncoder{sink: func(b []byte) ([]byte, bool) { return b, true }}
	enc.decisions(ds, e.now().UnixNano(), false)
	want := string(enc.buf)
	var writes int
	w := &countingWriter{ResponseRecorder: httptest.NewRecorder(), writes: &writes}
	req := httptest.NewRequest("GET", "/v1/decisions", nil)
	req.RemoteAddr = "127.0.0.1:4242"
	req.Header.Set("X-Api-Key", "key1")
	e.h.ServeHTTP(w, req)
	if w.Body.String() != want {
		t.Fatalf("live body (%d bytes) differs from the whole-buffer one (%d)", w.Body.Len(), len(want))
	}
	if writes < len(want)/chunkSize {
		t.Fatalf("%d writes for %d bytes: not streamed", writes, len(want))
	}
	if g := e.get(context.Background(), "/v1/decisions", "Accept-Encoding", "gzip"); gunzipString(t, g.Body.Bytes()) != want {
		t.Fatal("gzip live body differs")
	}

	// delta: startup first, then a new decision; a failed write keeps the cursor
	e.get(context.Background(), "/v1/decisions/stream?startup=true")
	e.advance(time.Second)
	e.expect(e.do("POST", "/v1/alerts", []any{manualAlert("Ip", "9.9.9.9", "ban", "1h", e.now())}, withToken(tok)), 201)
	fw := &failingWriter{ResponseRecorder: httptest.NewRecorder()}
	req = httptest.NewRequest("GET", "/v1/decisions/stream", nil)
	req.RemoteAddr = "127.0.0.1:4242"
	req.Header.Set("X-Api-Key", "key1")
	e.h.ServeHTTP(fw, req)
	if d := e.get(context.Background(), "/v1/decisions/stream"); !strings.Contains(d.Body.String(), `"value":"9.9.9.9"`) {
		t.Fatalf("delta after a failed write lost the new decision: %s", d.Body.String())
	}
	if d := e.get(context.Background(), "/v1/decisions/stream"); d.Body.String() != `{"deleted":null,"new":null}` {
		t.Fatalf("delta after a served one: %s", d.Body.String())
	}
}

type countingWriter struct {
	*httptest.ResponseRecorder
	writes *int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	*c.writes++
	return c.ResponseRecorder.Write(b)
}

type failingWriter struct{ *httptest.ResponseRecorder }

func (failingWriter) Write([]byte) (int, error) { return 0, http.ErrHandlerTimeout }

// legacyAppendString is the string encoder the golden bodies were
// recorded with (before the table lookup).
func legacyAppendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' && c < 0x80 {
			continue
		}
		if c >= 0x80 {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

func TestAppendStringSameBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 50000; i++ {
		b := make([]byte, r.IntN(40))
		for j := range b {
			if r.IntN(4) == 0 {
				b[j] = byte(r.IntN(256))
			} else {
				b[j] = byte(0x20 + r.IntN(0x5f))
			}
		}
		if got, want := appendString(nil, string(b)), legacyAppendString(nil, string(b)); !bytes.Equal(got, want) {
			t.Fatalf("%q: %q, want %q", b, got, want)
		}
	}
	for c := 0; c < 256; c++ {
		s := "a" + string([]byte{byte(c)}) + "b"
		if got, want := appendString(nil, s), legacyAppendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("byte %#x: %q, want %q", c, got, want)
		}
	}
}

// A bouncer that stops reading is cut after writeStall, so it releases
// the shared encoding it held.
func TestStalledReaderReleasesEncoding(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisionsFrom(e, tok, 0, 5000) // ~900 kB, far more than the shrunk socket buffers below hold
	old := writeStall
	writeStall = 300 * time.Millisecond
	defer func() { writeStall = old }()
	c := e.srv.startups
	c.window = 10 * time.Millisecond
	ts := httptest.NewUnstartedServer(e.h)
	ts.Listener = smallBufListener{ts.Listener}
	ts.Start()
	defer ts.Close()
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(conn, "GET /v1/decisions/stream?startup=true HTTP/1.1\r\nHost: x\r\nX-Api-Key: key1\r\n\r\n")
	waitFor(t, "the encoding to be built", func() bool { return c.builds.Load() == 1 })
	waitFor(t, "the stalled reader cut and the encoding released", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.live == 0
	})
}

// smallBufListener shrinks the send buffer of accepted connections, so a
// client that does not read blocks the server's writes quickly.
type smallBufListener struct{ net.Listener }

func (l smallBufListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// loadDecisionsFrom stores n IP ban decisions numbered from first.
func loadDecisionsFrom(e *env, tok string, first, n int) {
	e.t.Helper()
	ds := make([]any, n)
	for i := range ds {
		k := first + i
		ds[i] = map[string]any{"duration": "24h", "origin": "cscli-import", "scenario": "import",
			"scope": "Ip", "type": "ban", "value": fmt.Sprintf("11.%d.%d.%d", k>>16&255, k>>8&255, k&255)}
	}
	a := manualAlert("Ip", "10.0.0.0", "ban", "1h", e.now())
	a["decisions"] = ds
	e.expect(e.do("POST", "/v1/alerts", []any{a}, withToken(tok)), 201)
}

// An encoding still in progress is joined whatever its age (its last byte
// comes no later than a new encoding's would); once built, only within
// the window.
func TestStartupJoinsEncodingInProgress(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 10)
	c := e.srv.startups
	c.window = time.Hour
	started, proceed := make(chan struct{}), make(chan struct{})
	c.testHookBuilding = func() {
		c.testHookBuilding = nil
		close(started)
		<-proceed
	}
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- e.get(context.Background(), "/v1/decisions/stream?startup=true") }()
	<-started
	e.advance(time.Minute) // the encoding is now a minute old, still running
	second := make(chan *httptest.ResponseRecorder)
	go func() { second <- e.get(context.Background(), "/v1/decisions/stream?startup=true") }()
	waitFor(t, "the second request to join", func() bool { return c.joins.Load() == 1 })
	close(proceed)
	a, b := <-first, <-second
	if a.Body.String() != b.Body.String() || c.builds.Load() != 1 {
		t.Fatalf("joined answer differs or %d builds", c.builds.Load())
	}
	// built and a minute old: a new request encodes again
	c.window = time.Second
	e.get(context.Background(), "/v1/decisions/stream?startup=true")
	if c.builds.Load() != 2 {
		t.Fatalf("a built encoding older than the window was reused (%d builds)", c.builds.Load())
	}
}
