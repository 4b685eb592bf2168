package capi

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
	"github.com/halapi/halapi/fsm"
)

// When every voter applies fsm.ImportList, a pull goes as compact lists of
// ListChunkSize values (runs of one origin/type/scope/scenario), and
// stores what the ImportDecisions path stores.
func TestPullChunksAsLists(t *testing.T) {
	run := func(lists bool) (*localApplier, []*fsm.Decision) {
		fake := newFake(t)
		cfg := testConfig(fake)
		cfg.ChunkSize, cfg.ListChunkSize = 7, 7
		s, a, cl := newUnstarted(t, fake, cfg)
		a.lists.Store(lists)
		var ds []capitest.Decision
		var lines []string
		for i := 0; i < 20; i++ {
			// community decisions have their own durations: per-value expiries
			ds = append(ds, capitest.Decision{Value: fmt.Sprintf("100.0.0.%d", i), Duration: fmt.Sprintf("%dh", 1+i%2)})
			lines = append(lines, fmt.Sprintf("100.1.0.%d", i))
		}
		fake.SetBlocklist("big", lines)
		fake.SetStream(capitest.StreamResponse{New: []capitest.NewGroup{
			{Scenario: "s", Scope: "Ip", Decisions: ds[:15]}, {Scenario: "t", Scope: "ip", Decisions: ds[15:]}},
			Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{fake.BlocklistLink("big", "ban", "Ip", "24h")}}})
		startup := true
		pull(t, s, cl, &startup, false)
		return a, a.f.Decisions(&fsm.DecisionFilter{}, time.Now())
	}
	a, got := run(true)
	n, sizes := a.commands(fsm.CmdImportList)
	slices.Sort(sizes)
	// community: 7+7+1 of "s", 5 of "t"; the blocklist: 7+7+6
	if n != 7 || fmt.Sprint(sizes) != "[1 5 6 7 7 7 7]" {
		t.Fatalf("%d list commands, sizes %v", n, sizes)
	}
	if n, _ := a.commands(fsm.CmdImportDecisions); n != 0 {
		t.Errorf("%d ImportDecisions commands beside the lists", n)
	}
	_, want := run(false)
	if len(got) != 40 || len(want) != 40 {
		t.Fatalf("%d decisions through lists, %d through ImportDecisions, want 40", len(got), len(want))
	}
	type key struct {
		origin, typ, scope, value, scenario string
		alert                               int64
	}
	view := func(ds []*fsm.Decision) (map[key]time.Duration, map[fsm.UUID]bool) {
		out, uuids := map[key]time.Duration{}, map[fsm.UUID]bool{}
		for _, d := range ds {
			out[key{d.Origin, d.Type, d.Scope, d.Value, d.Scenario, d.AlertID}] = time.Duration(d.Until - d.CreatedAt).Round(time.Hour)
			uuids[d.UUID] = true
		}
		return out, uuids
	}
	gv, gu := view(got)
	wv, _ := view(want)
	if fmt.Sprint(gv) != fmt.Sprint(wv) {
		t.Errorf("through lists:\n%v\nthrough ImportDecisions:\n%v", gv, wv)
	}
	if len(gu) != 40 || gu[fsm.UUID{}] {
		t.Errorf("%d distinct UUIDs (zero among them: %v), want 40", len(gu), gu[fsm.UUID{}])
	}
}

// A list chunk whose answer timed out is sent again under the same request
// ID: applied once.
func TestPullListChunkRetriedAfterTimeoutAppliedOnce(t *testing.T) {
	checkChunkRetriedOnce(t, true, fsm.CmdImportList)
}

// Runs of one template are ordered by address (non-addresses first, in
// their order); runs stay where they were.
func TestAddressOrder(t *testing.T) {
	pb := newPullBuilder(time.Now())
	d := func(scope, scenario, value string) pulled {
		x, ok := pb.decision(OriginLists, scenario, "ban", scope, value, "1h")
		if !ok {
			t.Fatalf("%s %s refused", scope, value)
		}
		return x
	}
	ds := []pulled{
		d("Ip", "a", "10.0.0.2"), d("Ip", "a", "2001:db8::1"), d("Ip", "a", "9.9.9.9"), d("Range", "a", "10.0.0.0/8"), d("Range", "a", "10.0.0.0/24"),
		d("Ip", "b", "5.5.5.5"), d("Ip", "b", "1.1.1.1"),
		d("Country", "a", "FR"), d("Country", "a", "DE"),
	}
	ds[3].t, ds[4].t = ds[0].t, ds[0].t // one run
	var got []string
	for _, i := range addressOrder(ds) {
		got = append(got, ds[i].t.Scenario+":"+ds[i].Value)
	}
	want := "[a:9.9.9.9 a:10.0.0.0/8 a:10.0.0.0/24 a:10.0.0.2 a:2001:db8::1 b:1.1.1.1 b:5.5.5.5 a:FR a:DE]"
	if fmt.Sprint(got) != want {
		t.Errorf("order %v\nwant  %s", got, want)
	}
}

// A list of long values is cut by bytes too: no entry grows past
// listChunkBytes (plus one value).
func TestListChunksBoundedInBytes(t *testing.T) {
	a := newLocal()
	a.lists.Store(true)
	s := New(Config{}, a.f, a, newLogger(&logBuffer{}))
	long := strings.Repeat("x", 60<<10)
	var ds []pulled
	tmpl := &pullTemplate{Origin: OriginLists, Type: "ban", Scope: "Country", Scenario: "l"}
	for i := range 200 {
		ds = append(ds, pulled{t: tmpl, Value: fmt.Sprintf("%d%s", i, long)})
	}
	chunks := s.importChunks(ds)
	total := 0
	for _, c := range chunks {
		l := c.body(1, fsm.Alert{}).(fsm.ImportList)
		size := 0
		for _, v := range l.Values {
			size += len(v)
		}
		if size > listChunkBytes+len(long)+8 {
			t.Errorf("a chunk of %d bytes", size)
		}
		total += len(l.Values)
	}
	if len(chunks) < 2 || total != 200 {
		t.Errorf("%d chunks holding %d values", len(chunks), total)
	}
}

// A downloaded list: each value once (the same text twice, blanks around
// it or not), invalid and empty lines skipped, allowlisted values counted
// and dropped; two texts of one address stay two values (the store keys
// decisions by value), and the result is in address order.
func TestParseBlocklist(t *testing.T) {
	body := []byte("10.0.0.2\n  1.2.3.4 \n\n1.2.3.4\nnot-an-ip\n::ffff:1.2.3.4\n192.168.1.7\n10.0.0.0/8\n10.0.0.2\n192.168.1.7\n2001:db8::1\n")
	bl := BlocklistLink{Name: "l", URL: "http://x/", Remediation: "ban", Scope: "ip", Duration: "24h"}
	r, _ := fsm.ParseRange("192.168.0.0/16")
	allow := &allowFilter{ranges: []fsm.IPRange{r}, names: []string{"lan"}}
	now := time.Now()
	ds, lines, filtered, err := parseBlocklist(body, bl, now, allow)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.Value)
		if d.t.Scope != "Ip" || d.t.Origin != OriginLists || d.t.Scenario != "l" || d.t.Type != "ban" || d.Until != now.Add(24*time.Hour).UnixNano() {
			t.Errorf("%s: template %+v, until %d", d.Value, *d.t, d.Until)
		}
	}
	if want := "[1.2.3.4 ::ffff:1.2.3.4 10.0.0.0/8 10.0.0.2 2001:db8::1]"; fmt.Sprint(got) != want {
		t.Errorf("values %v, want %s", got, want)
	}
	if lines != 10 || filtered != 1 {
		t.Errorf("lines %d (want the 10 non-empty ones), filtered %d (want 1: 192.168.1.7 once)", lines, filtered)
	}
	// already in address order: addressOrder keeps it
	for i, k := range addressOrder(ds) {
		if int(k) != i {
			t.Fatalf("addressOrder moved %d to %d", k, i)
		}
	}
	if ds, lines, _, err := parseBlocklist([]byte("\n \n"), bl, now, allow); err != nil || len(ds) != 0 || lines != 0 {
		t.Errorf("a blank list: %d values, %d lines, %v", len(ds), lines, err)
	}
}
