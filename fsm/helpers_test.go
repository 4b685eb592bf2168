package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// T0 is the base leader clock used by the tests (unix ns).
var T0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

const (
	sec  = int64(time.Second)
	mins = int64(time.Minute)
	hour = int64(time.Hour)
)

// at converts a unix-ns timestamp to a time.Time for the query methods.
func at(ns int64) time.Time { return time.Unix(0, ns) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// harness drives an FSM the way raft does: encoded entries with increasing
// indexes.
type harness struct {
	t   testing.TB
	f   *FSM
	idx uint64
	// noImage skips the published-state check (benchmarks: imaging the
	// whole state at every entry would be most of what they measure).
	noImage bool
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, f: New(quietLogger())}
}

// newBenchHarness is a harness without the per-entry published-state
// check, for benchmarks (the tests keep it).
func newBenchHarness(b *testing.B) *harness {
	return &harness{t: b, f: New(quietLogger()), noImage: true}
}

// entry encodes a command.
func entry(t testing.TB, typ CmdType, ts int64, body any) []byte {
	t.Helper()
	data, err := Command{Type: typ, Time: ts, Body: body}.Encode()
	if err != nil {
		t.Fatalf("encode %d: %v", typ, err)
	}
	return data
}

func rawLog(index uint64, data []byte) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: data}
}

// raw applies already encoded bytes as the next log entry.
func (h *harness) raw(data []byte) any {
	h.t.Helper()
	h.idx++
	if h.noImage {
		return h.f.Apply(rawLog(h.idx, data))
	}
	before := h.f.read()
	img := stateImage(h.t, before)
	out := h.f.Apply(rawLog(h.idx, data))
	if !bytes.Equal(img, stateImage(h.t, before)) {
		h.t.Fatalf("applying index %d changed the state published before it (readers hold it without a lock)", h.idx)
	}
	return out
}

// apply applies a command as the next log entry and returns its result.
func (h *harness) apply(typ CmdType, ts int64, body any) *Result {
	h.t.Helper()
	out := h.raw(entry(h.t, typ, ts, body))
	res, ok := out.(*Result)
	if !ok || res == nil {
		h.t.Fatalf("apply %d at index %d: got %T %v, want *Result", typ, h.idx, out, out)
	}
	return res
}

// must applies a command that has to succeed.
func (h *harness) must(typ CmdType, ts int64, body any) *Result {
	h.t.Helper()
	res := h.apply(typ, ts, body)
	if res.Err() != nil {
		h.t.Fatalf("apply %d at index %d: unexpected error %v", typ, h.idx, res.Err())
	}
	return res
}

// alert creates one alert (owned by machine, may be "") with decisions and
// returns the alert ID and its decision IDs.
func (h *harness) alert(ts int64, machine string, a Alert, ds ...Decision) (int64, []int64) {
	h.t.Helper()
	if a.Scenario == "" {
		a.Scenario = "test/scenario"
	}
	res := h.must(CmdAlertsCreate, ts, AlertsCreate{MachineID: machine, Alerts: []NewAlert{{Alert: a, Decisions: ds}}})
	if len(res.IDs) != 1 {
		h.t.Fatalf("alert create: got IDs %v, want one", res.IDs)
	}
	st := h.f.Alert(res.IDs[0])
	if st == nil {
		h.t.Fatalf("alert %d not stored", res.IDs[0])
	}
	return st.ID, append([]int64(nil), st.DecisionIDs...)
}

// dec creates one alert holding a single decision and returns the decision ID.
func (h *harness) dec(ts int64, d Decision) int64 {
	h.t.Helper()
	_, ids := h.alert(ts, "", Alert{}, d)
	if len(ids) != 1 {
		h.t.Fatalf("decision %+v was not stored", d)
	}
	return ids[0]
}

// simDec is dec for a simulated alert.
func (h *harness) simDec(ts int64, d Decision) int64 {
	h.t.Helper()
	_, ids := h.alert(ts, "", Alert{Simulated: true}, d)
	if len(ids) != 1 {
		h.t.Fatalf("decision %+v was not stored", d)
	}
	return ids[0]
}

func (h *harness) expire(ts int64, ids ...int64) *Result {
	h.t.Helper()
	return h.must(CmdDecisionsExpire, ts, DecisionsExpire{IDs: ids})
}

func (h *harness) deleteAlerts(ts int64, ids ...int64) *Result {
	h.t.Helper()
	return h.must(CmdAlertsDelete, ts, AlertsDelete{IDs: ids})
}

// ban returns an Ip-scoped ban decision.
func ban(value string, until int64) Decision {
	return Decision{Origin: "cscli", Type: "ban", Scope: "Ip", Value: value, Scenario: "manual ban", Until: until}
}

func withType(d Decision, typ string) Decision      { d.Type = typ; return d }
func withScope(d Decision, scope string) Decision   { d.Scope = scope; return d }
func withOrigin(d Decision, origin string) Decision { d.Origin = origin; return d }
func withScenario(d Decision, sc string) Decision   { d.Scenario = sc; return d }
func withUUID(d Decision, uuid string) Decision {
	u, err := ParseUUID(uuid)
	if err != nil {
		panic(err)
	}
	d.UUID = u
	return d
}
func rangeOf(t testing.TB, s string) *IPRange { t.Helper(); r := mustRange(t, s); return &r }
func ptr[T any](v T) *T                       { return &v }

func sortedIDs(v []int64) []int64 {
	c := append([]int64(nil), v...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c
}

func mustRange(t testing.TB, s string) IPRange {
	t.Helper()
	r, err := ParseRange(s)
	if err != nil {
		t.Fatalf("ParseRange(%q): %v", s, err)
	}
	return r
}

func idsOf(ds []*Decision) []int64 {
	out := []int64{}
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

func equalIDs(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func checkIDs(t testing.TB, what string, got []*Decision, want ...int64) {
	t.Helper()
	if want == nil {
		want = []int64{}
	}
	if g := idsOf(got); !equalIDs(g, want) {
		t.Errorf("%s: got decision IDs %v, want %v", what, g, want)
	}
}

// memSink is a buffer-backed raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
	failWrites        bool
}

var errSinkFull = errors.New("sink full")

func (s *memSink) Write(p []byte) (int, error) {
	if s.failWrites {
		return 0, errSinkFull
	}
	return s.Buffer.Write(p)
}
func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

// persist takes a snapshot's bytes.
func persist(t testing.TB, snap raft.FSMSnapshot) []byte {
	t.Helper()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("persist: sink closed=%v cancelled=%v, want closed only", sink.closed, sink.cancelled)
	}
	snap.Release()
	return sink.Bytes()
}

// closeTracker records that Restore closed its reader.
type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

// restored builds a fresh FSM from snapshot bytes.
func restored(t testing.TB, data []byte) *FSM {
	t.Helper()
	f := New(quietLogger())
	rc := &closeTracker{Reader: bytes.NewReader(data)}
	if err := f.Restore(rc); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if !rc.closed {
		t.Fatalf("restore did not close its reader")
	}
	return f
}

// roundTrip snapshots f and restores it into a fresh FSM.
func roundTrip(t testing.TB, f *FSM) *FSM {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return restored(t, persist(t, snap))
}

// decView is a decision with its (non-serialized) range, for comparisons.
type decView struct {
	D Decision `json:"d"`
	R IPRange  `json:"r"`
}

func viewDecisions(ds []*Decision) []decView {
	out := []decView{}
	for _, d := range ds {
		out = append(out, decView{D: *d, R: d.Range.Range()})
	}
	return out
}

type itemView struct {
	I AllowlistItem `json:"i"`
	R IPRange       `json:"r"`
}

type allowlistView struct {
	A     Allowlist  `json:"a"`
	Items []itemView `json:"items"`
}

type streamView struct {
	New, Deleted []decView
	Index        uint64
}

// dump is every observable part of an FSM at one instant, in a form that
// compares equal when two FSMs hold the same state (nil and empty slices
// are equivalent through omitempty, exactly as in snapshots).
type dump struct {
	JWTKey         []byte
	Config         map[string][]byte // internal
	Machines       []Machine
	Bouncers       []Bouncer
	Allowlists     []allowlistView
	Alerts         []Alert
	AlertDecisions map[int64][]decView
	Active         []decView
	ActiveAll      []decView
	Stored         []decView // every stored decision (internal)
	Tombstones     []decView // internal
	Streams        map[string]streamView
	Counts         [3]int
	CountDecisions map[string]int
	TimeLeft       map[string]time.Duration
	Checks         map[string][]string
	LastIndex      uint64
	NextAlertID    int64
	NextDecisionID int64
	AlertCount     int
	Audit          []AuditRecord
}

// streamQueries are the stream calls every dump records.
type streamQuery struct {
	name    string
	flt     DecisionFilter
	cur     StreamCursor
	startup bool
}

func takeDump(t testing.TB, f *FSM, now int64, probes []string, streams []streamQuery) dump {
	t.Helper()
	n := at(now)
	d := dump{
		JWTKey:         f.JWTKey(),
		AlertDecisions: map[int64][]decView{},
		Streams:        map[string]streamView{},
		CountDecisions: map[string]int{},
		TimeLeft:       map[string]time.Duration{},
		Checks:         map[string][]string{},
	}
	for _, m := range f.Machines() {
		d.Machines = append(d.Machines, *m)
	}
	for _, b := range f.Bouncers() {
		d.Bouncers = append(d.Bouncers, *b)
	}
	for _, a := range f.Allowlists() {
		v := allowlistView{A: *a}
		v.A.Items = nil
		for _, it := range a.Items {
			v.Items = append(v.Items, itemView{I: it, R: it.Range})
		}
		d.Allowlists = append(d.Allowlists, v)
	}
	for _, a := range f.Alerts(&AlertFilter{Asc: true}, n) {
		d.Alerts = append(d.Alerts, *a)
		d.AlertDecisions[a.ID] = viewDecisions(f.AlertDecisions(a))
	}
	d.Audit = f.AuditLog(0)
	d.Active = viewDecisions(f.Decisions(&DecisionFilter{}, n))
	d.ActiveAll = viewDecisions(f.Decisions(&DecisionFilter{IncludeSimulated: true}, n))
	f.mu.Lock()
	d.Config = map[string][]byte{}
	for k, v := range f.s.config {
		d.Config[k] = v
	}
	var all, tombs []*Decision
	f.s.decisions.Ascend(func(x *Decision) bool { all = append(all, x); return true })
	f.s.tombstones.Ascend(func(x *Decision) bool { tombs = append(tombs, x); return true })
	d.LastIndex = f.s.lastIndex
	d.NextAlertID = f.s.nextAlertID
	d.NextDecisionID = f.s.nextDecisionID
	d.AlertCount = f.s.alertCount
	f.mu.Unlock()
	d.Stored = viewDecisions(all)
	d.Tombstones = viewDecisions(tombs)
	for _, q := range streams {
		flt := q.flt
		nd, del, idx := f.Stream(&flt, q.cur, q.startup, n)
		d.Streams[q.name] = streamView{New: viewDecisions(nd), Deleted: viewDecisions(del), Index: idx}
	}
	a, act, tot := f.Counts(n)
	d.Counts = [3]int{a, act, tot}
	for _, p := range probes {
		d.CountDecisions[p] = f.CountDecisions(p, time.Time{}, false, n)
		d.CountDecisions[p+" active"] = f.CountDecisions(p, time.Time{}, true, n)
		d.TimeLeft[p] = f.ActiveTimeLeft(p, n)
		reasons, err := f.AllowlistCheck(p, n)
		if err != nil {
			t.Fatalf("AllowlistCheck(%q): %v", p, err)
		}
		d.Checks[p] = reasons
	}
	return d
}

// compareDumps reports every differing component.
func compareDumps(t testing.TB, what string, got, want dump) {
	t.Helper()
	gj, wj := componentsJSON(t, got), componentsJSON(t, want)
	keys := make([]string, 0, len(wj))
	for k := range wj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if gj[k] != wj[k] {
			t.Errorf("%s: %s differs at byte %d\n got: …%s…\nwant: …%s…", what, k, firstDiff(gj[k], wj[k]),
				around(gj[k], firstDiff(gj[k], wj[k])), around(wj[k], firstDiff(gj[k], wj[k])))
		}
	}
}

func firstDiff(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}

// around returns the text near position i.
func around(s string, i int) string {
	lo, hi := max(0, i-200), min(len(s), i+200)
	return s[lo:hi]
}

func componentsJSON(t testing.TB, d dump) map[string]string {
	t.Helper()
	parts := map[string]any{
		"JWTKey": d.JWTKey, "Config": d.Config, "Machines": d.Machines, "Bouncers": d.Bouncers, "Allowlists": d.Allowlists,
		"Alerts": d.Alerts, "AlertDecisions": d.AlertDecisions, "Active": d.Active, "ActiveAll": d.ActiveAll,
		"Stored": d.Stored, "Tombstones": d.Tombstones, "Counts": d.Counts,
		"CountDecisions": d.CountDecisions, "TimeLeft": d.TimeLeft, "Checks": d.Checks,
		"LastIndex": d.LastIndex, "NextAlertID": d.NextAlertID, "NextDecisionID": d.NextDecisionID,
		"AlertCount": d.AlertCount, "Audit": d.Audit,
	}
	for k, v := range d.Streams {
		parts["Stream "+k] = v
	}
	out := map[string]string{}
	for k, v := range parts {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("marshal %s: %v", k, err)
		}
		out[k] = string(b)
	}
	return out
}

// checkIndexInvariants verifies that every secondary index agrees with the
// decisions tree (the FSM's internal bookkeeping).
func checkIndexInvariants(t testing.TB, f *FSM) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	if p := f.read(); p.decisions.Len() != s.decisions.Len() || p.lastIndex != s.lastIndex || p.alertCount != s.alertCount {
		t.Errorf("published state differs from the writer's: %d/%d decisions, index %d/%d",
			p.decisions.Len(), s.decisions.Len(), p.lastIndex, s.lastIndex)
	}
	var prefixes [2][129]int32
	valid, deleted, grouped := 0, 0, s.valueIdx.Len()
	s.decisions.Ascend(func(d *Decision) bool {
		found := false
		s.sameValue(d.Value, parsePrefix(d.Value), func(x *Decision) bool {
			found = found || x == d
			return !found
		})
		if !found {
			t.Errorf("decision %d not found by its value %q", d.ID, d.Value)
		}
		if x, ok := s.valueIdx.Get(d); ok != !d.Range.Valid() || (ok && x != d) {
			t.Errorf("decision %d: in valueIdx %v, want %v", d.ID, ok, !d.Range.Valid())
		}
		if u, ok := s.byUntil.Get(d); !ok || u != d {
			t.Errorf("decision %d missing from byUntil", d.ID)
		}
		if d.Range.Valid() {
			valid++
			prefixes[famIdx(d.Range.Fam)][d.Range.Bits]++
			if x, ok := s.ipIdx.Get(d); !ok || x != d {
				t.Errorf("decision %d missing from the IP index", d.ID)
			}
		}
		if d.DeletedIndex > 0 {
			deleted++
			if x, ok := s.deleted.Get(d); !ok || x != d {
				t.Errorf("decision %d missing from deleted", d.ID)
			}
		}
		return true
	})
	n := s.decisions.Len()
	if s.byUntil.Len() != n || grouped+valid != n || s.ipIdx.Len() != valid || s.deleted.Len() != deleted {
		t.Errorf("index sizes: decisions %d byUntil %d valueIdx %d ipIdx %d (want %d) deleted %d (want %d)",
			n, s.byUntil.Len(), grouped, s.ipIdx.Len(), valid, s.deleted.Len(), deleted)
	}
	if prefixes != s.prefixes {
		t.Errorf("prefix counters disagree with the IP index")
	}
	if s.alerts.Len() != s.alertCount {
		t.Errorf("alert count %d, tree holds %d", s.alertCount, s.alerts.Len())
	}
	s.alerts.Ascend(func(a *Alert) bool {
		for _, id := range a.DecisionIDs {
			if d := s.decision(id); d != nil && d.AlertID != a.ID {
				t.Errorf("decision %d listed by alert %d belongs to %d", id, a.ID, d.AlertID)
			}
		}
		return true
	})
}
