package lapi

import (
	"bytes"
	stdgzip "compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/klauspost/compress/gzip"
)

// fieldByField is the encoding of one decision before fieldCache (the
// reference its cached bytes are checked against).
func fieldByField(buf []byte, d *fsm.Decision, now int64, withUUID bool) []byte {
	buf = append(buf, `{"duration":"`...)
	buf = append(buf, time.Duration(d.Until-now).Round(time.Second).String()...)
	buf = append(buf, `","id":`...)
	buf = strconv.AppendInt(buf, d.ID, 10)
	for _, f := range []struct{ k, v string }{{"origin", d.Origin}, {"scenario", d.Scenario}, {"scope", d.Scope}, {"type", d.Type}} {
		buf = append(buf, `,"`+f.k+`":`...)
		buf = legacyAppendString(buf, f.v)
	}
	if withUUID && !d.UUID.IsZero() {
		buf = append(buf, `,"uuid":"`+d.UUID.String()+`"`...)
	}
	buf = append(buf, `,"value":`...)
	buf = legacyAppendString(buf, d.Value)
	return append(buf, '}')
}

// TestFieldCacheSameBytes: runs of decisions whose durations and
// origin/scenario/scope/type repeat, change, or come back (the cache's
// hits and misses), with strings to escape, durations around the second
// boundaries and the int64 bounds, with and without UUIDs.
func TestFieldCacheSameBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC).UnixNano()
	strs := []string{"crowdsec", "cscli", "CAPI", "lists", "ban", "captcha", "Ip", "Range", `a"b`, "é<>&\n\t\x01", "", "crowdsecurity/ssh-bf"}
	offsets := []int64{0, 1, -1, 499_999_999, 500_000_000, -500_000_000, 1e9, 59e9 + 5e8, 3600e9, -3600e9, 4 * 3600e9, math.MaxInt64 / 2, math.MinInt64 / 2}
	pick := func() string { return strs[rng.IntN(len(strs))] }
	var d fsm.Decision
	var fc fieldCache
	var got, want []byte
	changes := 0
	for i := range 20000 {
		if i == 0 || rng.IntN(4) == 0 { // a new run of fields
			d.Origin, d.Scenario, d.Scope, d.Type = pick(), pick(), pick(), pick()
			if rng.IntN(2) == 0 { // same text, another string header
				d.Origin = string([]byte(d.Origin))
			}
			changes++
		}
		if i == 0 || rng.IntN(3) == 0 {
			if rng.IntN(2) == 0 {
				d.Until = now + offsets[rng.IntN(len(offsets))]
			} else {
				d.Until = now + rng.Int64N(48*3600e9) - 24*3600e9
			}
		} else if rng.IntN(2) == 0 {
			d.Until += rng.Int64N(1e9) // often the same rounded second
		}
		d.ID = rng.Int64()
		d.Value = pick() + strconv.Itoa(i)
		d.UUID = fsm.UUID{}
		if rng.IntN(3) > 0 {
			for j := range d.UUID {
				d.UUID[j] = byte(rng.Uint32())
			}
		}
		withUUID := rng.IntN(4) > 0
		got = fc.appendDecision(got[:0], &d, now, withUUID)
		want = fieldByField(want[:0], &d, now, withUUID)
		if !bytes.Equal(got, want) {
			t.Fatalf("decision %d:\n got %s\nwant %s", i, got, want)
		}
	}
	if changes < 1000 {
		t.Fatalf("only %d field changes", changes)
	}
}

// TestStartupPartsSameBytes: a startup answer encoded in parts on several
// cores (parts of 1 decision to a few thousand, parts whose ID range holds
// nothing, a non-empty "deleted", outranked duplicates, an empty "new")
// is byte for byte the one-goroutine encoding of fsm.Stream's lists.
func TestStartupPartsSameBytes(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 3000)
	// shorter duplicates of some values (outranked: not listed)
	ds := make([]any, 200)
	for i := range ds {
		ds[i] = map[string]any{"duration": "30m", "origin": "cscli", "scenario": "dup", "scope": "Ip", "type": "ban",
			"value": fmt.Sprintf("10.0.%d.%d", i*7>>8&255, i*7&255)}
	}
	a := manualAlert("Ip", "10.0.0.0", "ban", "1h", e.now())
	a["decisions"] = ds
	e.expect(e.do("POST", "/v1/alerts", []any{a}, withToken(tok)), 201)
	// expired by hand: listed in "deleted"; a hole in the middle of the IDs
	for i := 1000; i < 1400; i++ {
		e.expect(e.do("DELETE", fmt.Sprintf("/v1/decisions?ip=10.0.%d.%d", i>>8&255, i&255), nil, withToken(tok)), 200)
	}
	oldMin, oldPart := parallelMin, partDecisions
	defer func() { parallelMin, partDecisions = oldMin, oldPart }()
	parallelMin = 1
	for _, q := range []string{"", "&origins=nobody", "&origins=cscli", "&dedup=false"} {
		flt, err := bouncerFilter(mustQuery(t, "startup=true"+q), true)
		if err != nil {
			t.Fatal(err)
		}
		flt.NoDedup = strings.Contains(q, "dedup=false")
		for _, part := range []int{1, 7, 300, 5000, 1 << 30} {
			partDecisions = part
			e.advance(2 * time.Second) // a new encoding each time
			want := wholeBody(e, flt)
			w := e.get(context.Background(), "/v1/decisions/stream?startup=true"+q)
			if w.Code != 200 || w.Body.String() != want {
				t.Fatalf("filter %q, parts of %d: status %d, %d bytes, want %d:\n%.300s\nwant\n%.300s", q, part, w.Code, w.Body.Len(), len(want), w.Body.String(), want)
			}
			if q == "" && (!strings.Contains(want, `"deleted":[{`) || !strings.Contains(want, `"new":[{`)) {
				t.Fatalf("the test answer lacks deleted or new decisions: %.200s", want)
			}
			if q == "&origins=nobody" && want != `{"deleted":null,"new":null}` {
				t.Fatalf("empty answer: %s", want)
			}
		}
	}
}

func mustQuery(t *testing.T, q string) url.Values {
	t.Helper()
	v, err := url.ParseQuery(q)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestStartupGzipParallel: a startup body of several compression blocks
// (deflated on all cores) is one gzip member that Go's reader (every Go
// bouncer's transport) inflates to the raw body, with nothing after it,
// and compresses within 10% of one deflate stream.
func TestStartupGzipParallel(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	loadDecisions(e, tok, 20000) // ~3.4 MB: a few 1 MiB blocks
	want := wholeBody(e, &fsm.DecisionFilter{Contains: true, Scopes: []string{"Ip", "Range"}})
	if len(want) < 2*gzBlockChunks*chunkSize {
		t.Fatalf("test list too small: %d bytes", len(want))
	}
	w := e.get(context.Background(), "/v1/decisions/stream?startup=true", "Accept-Encoding", "gzip")
	if w.Code != 200 || w.Header().Get("Content-Encoding") != "gzip" {
		t.Fatalf("status %d, Content-Encoding %q", w.Code, w.Header().Get("Content-Encoding"))
	}
	br := bytes.NewReader(w.Body.Bytes())
	zr, err := stdgzip.NewReader(br)
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	got, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("inflate: %v", err)
	}
	if string(got) != want {
		t.Fatalf("inflated %d bytes, want the raw body of %d", len(got), len(want))
	}
	if br.Len() != 0 {
		t.Fatalf("%d bytes after the first gzip member", br.Len())
	}
	// one stream of the same compressor (the one before), for the ratio
	var one bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&one, gzip.BestSpeed)
	_, _ = zw.Write([]byte(want))
	_ = zw.Close()
	if float64(w.Body.Len()) > 1.1*float64(one.Len()) {
		t.Fatalf("parallel gzip %d bytes, one stream %d", w.Body.Len(), one.Len())
	}
	t.Logf("raw %d, parallel gzip %d, one level-1 stream %d", len(want), w.Body.Len(), one.Len())
}
