package fsm

import (
	"bytes"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// Tests of the read side's invariant 11, lost in 328ccb2 (DESIGN.md still
// names them) and restored; the first no longer needs FSM.OnApply.

// A query made while an entry is being applied does not wait for it: it
// answers from the last published state. The test holds the writer's lock
// and changes the writer's state exactly as applyLogs does before it
// publishes; a reader that took that lock would never return.
func TestReadDuringApplyDoesNotWait(t *testing.T) {
	h := newHarness(t)
	first := h.dec(T0, ban("1.1.1.1", T0+hour))
	h.f.mu.Lock()
	h.idx++
	cmd, err := Decode(entry(t, CmdAlertsCreate, T0, AlertsCreate{Alerts: []NewAlert{{Alert: Alert{Scenario: "s"},
		Decisions: []Decision{ban("2.2.2.2", T0+hour)}}}}))
	if err != nil {
		h.f.mu.Unlock()
		t.Fatal(err)
	}
	res := h.f.applyEntry(h.idx, nil, cmd, nil)
	type seen struct{ ids, stream []int64 }
	done := make(chan seen, 1)
	go func() {
		newD, _, _ := h.f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(T0))
		done <- seen{ids: idsOf(h.f.Decisions(&DecisionFilter{}, at(T0))), stream: idsOf(newD)}
	}()
	var s seen
	select {
	case s = <-done:
	case <-time.After(10 * time.Second):
		t.Error("a query blocked while an entry was being applied")
	}
	h.f.publishLocked()
	h.f.mu.Unlock()
	if !equalIDs(s.ids, []int64{first}) || !equalIDs(s.stream, []int64{first}) {
		t.Errorf("during the apply: decisions %v, stream %v; want the state before it, [%d]", s.ids, s.stream, first)
	}
	if len(res.IDs) != 1 {
		t.Fatalf("apply result %+v", res)
	}
	checkIDs(t, "after the apply", h.f.Decisions(&DecisionFilter{}, at(T0)), first, first+1)
}

// Readers running concurrently with applies, imports, expiries, restores
// and snapshots see consistent states (run with -race: a published state
// is never written).
func TestConcurrentReadersAndApplies(t *testing.T) {
	h := newHarness(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := mustRange(t, "10.0.0.0/8")
			for {
				select {
				case <-stop:
					return
				default:
				}
				newD, _, idx := h.f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(T0))
				for _, d := range newD {
					if d.CreatedIndex > idx {
						t.Errorf("stream at index %d holds decision %d created at %d", idx, d.ID, d.CreatedIndex)
						return
					}
				}
				h.f.Decisions(&DecisionFilter{IP: &q}, at(T0))
				h.f.Decisions(&DecisionFilter{Value: "10.0.0.1"}, at(T0))
				h.f.Bouncers()
				h.f.Counts(at(T0))
			}
		}()
	}
	// applied directly, not through harness.raw: its image of the whole
	// state per entry would make this test slow, and it is not the point
	must := func(typ CmdType, body any) {
		h.idx++
		if r := h.f.Apply(rawLog(h.idx, entry(t, typ, T0, body))).(*Result); r.Err() != nil {
			t.Fatalf("apply %d: %v", typ, r.Err())
		}
	}
	for i := 0; i < 30; i++ {
		var ds []Decision
		for j := 0; j < 50; j++ {
			ds = append(ds, capiDecision(i*50+j, T0+hour))
		}
		must(CmdImportDecisions, ImportDecisions{Alert: Alert{Scenario: "list"}, Decisions: ds})
		must(CmdBouncerCreate, BouncerCreate{Bouncer: Bouncer{Name: "b" + string(rune('a'+i)), KeyHash: "k"}})
		must(CmdAlertsCreate, AlertsCreate{Alerts: []NewAlert{{Alert: Alert{Scenario: "s"}, Decisions: []Decision{ban("10.0.0.1", T0+hour)}}}})
		must(CmdSetConfig, SetConfig{Key: "k", Value: []byte{byte(i) + 1}})
		if i%10 == 9 {
			snap, err := h.f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			data := persist(t, snap)
			if err := h.f.Restore(&closeTracker{Reader: bytes.NewReader(data)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	checkIndexInvariants(t, h.f)
}

// A View answers from one state: entries applied after it was taken do
// not show, and EachStartup (new, then deleted) lists exactly what Stream
// lists at startup.
func TestViewIsStableAndEachStartupMatchesStream(t *testing.T) {
	h := newHarness(t)
	a := h.dec(T0, ban("1.1.1.1", T0+hour))
	h.dec(T0, ban("1.1.1.1", T0+2*hour)) // dedup keeps the longest
	old := h.dec(T0, ban("2.2.2.2", T0+sec))
	sim := h.simDec(T0, ban("3.3.3.3", T0+hour))
	v := h.f.View()
	idx := v.Index()
	h.dec(T0, ban("4.4.4.4", T0+hour))
	h.expire(T0, a)
	if v.Index() != idx || h.f.View().Index() == idx {
		t.Fatalf("view index %d moved, or the FSM's (%d) did not", v.Index(), h.f.View().Index())
	}
	now := at(T0 + 10*sec)
	for _, flt := range []*DecisionFilter{{}, {NoDedup: true}, {IncludeSimulated: true}} {
		wantNew, wantDel, wantIdx := v.Stream(flt, StreamCursor{}, true, now)
		var gotNew, gotDel []*Decision
		v.EachStartup(flt, now, true, func(d *Decision) bool { gotNew = append(gotNew, d); return true })
		v.EachStartup(flt, now, false, func(d *Decision) bool { gotDel = append(gotDel, d); return true })
		if !equalIDs(idsOf(gotNew), idsOf(wantNew)) || !equalIDs(idsOf(gotDel), idsOf(wantDel)) || wantIdx != idx {
			t.Errorf("%+v: EachStartup new %v deleted %v, Stream new %v deleted %v (index %d, view %d)",
				flt, idsOf(gotNew), idsOf(gotDel), idsOf(wantNew), idsOf(wantDel), wantIdx, idx)
		}
		for _, d := range wantNew {
			if d.ID > sim {
				t.Errorf("%+v: decision %d applied after the view shows in it", flt, d.ID)
			}
		}
	}
	newD, del, _ := v.Stream(&DecisionFilter{}, StreamCursor{}, true, now)
	if len(newD) != 1 || newD[0].ID != a+1 || len(del) != 1 || del[0].ID != old {
		t.Errorf("view startup: new %v deleted %v; want [%d] and [%d]", idsOf(newD), idsOf(del), a+1, old)
	}
	n := 0
	v.EachStartup(&DecisionFilter{IncludeSimulated: true, NoDedup: true}, now, true, func(*Decision) bool { n++; return false })
	if n != 1 {
		t.Errorf("EachStartup went on after fn returned false (%d calls)", n)
	}
}

// A batch holding several big entries is decoded in parallel and applied
// in order: same results and same state as applying the entries one by
// one, a big malformed entry skipped alike.
func TestBatchOfBigEntriesMatchesOneByOne(t *testing.T) {
	defer func(w func() int) { predecodeWorkers = w }(predecodeWorkers)
	predecodeWorkers = func() int { return 3 }
	var entries [][]byte
	for c := 0; c < 4; c++ {
		b := ImportDecisions{AlertID: 1}
		if c == 0 {
			b = ImportDecisions{Alert: Alert{Scenario: "list"}}
		}
		for j := 0; j < 500; j++ {
			b.Decisions = append(b.Decisions, capiDecision(c*300+j, T0+hour)) // overlapping values: kept (same alert)
		}
		entries = append(entries, entry(t, CmdImportDecisions, T0, b))
		if c == 1 {
			bad := append(entry(t, CmdImportDecisions, T0, ImportDecisions{}), bytes.Repeat([]byte("x"), predecodeMin)...)
			entries = append(entries, bad)
		}
	}
	var logs []*raft.Log
	for i, e := range entries {
		if len(e) < predecodeMin {
			t.Fatalf("entry %d is %d bytes: too small to be decoded in parallel", i, len(e))
		}
		logs = append(logs, rawLog(uint64(i+1), e))
	}
	batch := New(quietLogger())
	got := batch.ApplyBatch(logs)
	single := newHarness(t)
	for i, e := range entries {
		want := single.raw(e).(*Result)
		g := got[i].(*Result)
		if g.Code != want.Code || g.N != want.N || !equalIDs(g.IDs, want.IDs) {
			t.Errorf("entry %d: batch result %+v, one by one %+v", i, g, want)
		}
	}
	if r := got[2].(*Result); r.Code != CodeInvalid {
		t.Errorf("malformed entry: %+v, want CodeInvalid", r)
	}
	a := viewDecisions(batch.Decisions(&DecisionFilter{}, at(T0)))
	b := viewDecisions(single.f.Decisions(&DecisionFilter{}, at(T0)))
	if len(a) != 2000 || !reflect.DeepEqual(a, b) {
		t.Errorf("batch stored %d decisions, one by one %d (or they differ)", len(a), len(b))
	}
	checkIndexInvariants(t, batch)
}

// A decision record repeated in a snapshot (never written, but a damaged
// or hostile stream may hold one), even after a lower ID, replaces the
// earlier one in every index.
func TestRestoreRepeatedDecisionReplaces(t *testing.T) {
	rec := func(id int64, value string) string {
		return `{"decision":{"id":` + strconv.FormatInt(id, 10) + `,"origin":"cscli","type":"ban","scope":"Ip","value":"` + value +
			`","scenario":"s","created_at":1,"until":` + strconv.FormatInt(T0+hour, 10) + `,"ci":1}}` + "\n"
	}
	snap := `{"meta":{"version":1,"next_alert_id":1,"next_decision_id":6,"last_index":3}}` + "\n" +
		rec(5, "1.1.1.1") + rec(3, "2.2.2.2") + rec(5, "3.3.3.3")
	f := restored(t, []byte(snap))
	checkIDs(t, "restored", f.Decisions(&DecisionFilter{}, at(T0)), 3, 5)
	if d := f.Decision(5); d == nil || d.Value != "3.3.3.3" {
		t.Errorf("decision 5 = %+v, want the later record", d)
	}
	if n := f.CountDecisions("1.1.1.1", time.Time{}, false, at(T0)); n != 0 {
		t.Errorf("the replaced record is still in the IP index (%d)", n)
	}
	checkIndexInvariants(t, f)
}
