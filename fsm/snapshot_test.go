package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

// world is an FSM holding every kind of record, plus the queries that
// observe it.
type world struct {
	h       *harness
	now     int64
	probes  []string
	streams []streamQuery
}

func populate(t testing.TB) *world {
	t.Helper()
	h := newHarness(t)
	h.must(CmdSetJWTKey, T0, SetJWTKey{Key: []byte("cluster-secret")})
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m1", PasswordHash: []byte("$2a$10$hash"), IP: "10.0.0.1",
		Validated: true, AuthType: AuthPassword, Scenarios: "a/b,c/d", Version: "v1.6.0", OSName: "linux", OSVersion: "6.1",
		FeatureFlags: "ff1", HubState: []byte(`{"parsers":[]}`), Datasources: []byte(`{"file":2}`)}})
	h.must(CmdMachineCreate, T0+sec, MachineCreate{Machine: Machine{ID: "m2", AuthType: AuthTLS}})
	h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "b1", KeyHash: "kh1", AuthType: AuthAPIKey,
		Type: "cs-firewall-bouncer", Version: "v0.0.31", AutoCreated: true, IP: "10.0.0.9"}})
	h.must(CmdBouncerCreate, T0+sec, BouncerCreate{Bouncer: Bouncer{Name: "b2", KeyHash: "kh2", AuthType: AuthTLS, Revoked: true}})
	h.must(CmdTouch, T0+2*sec, Touch{Machines: []MachineTouch{{ID: "m1", LastHeartbeat: T0 + 2*sec}},
		Bouncers: []BouncerTouch{{Name: "b1", LastPull: T0 + 2*sec, Cursor: 4}}})

	h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l1", Description: "office"})
	h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l2"})
	h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l3", Description: "emptied"})
	h.must(CmdAllowlistAdd, T0+sec, AllowlistAdd{Name: "l1", Items: []AllowlistItem{
		{Value: "192.168.0.0/16", Comment: "lan"}, {Value: "2001:db8:dead::/48", Expiration: T0 + 48*hour},
		{Value: "172.16.5.5", Expiration: T0 + hour}}})
	h.must(CmdAllowlistAdd, T0+sec, AllowlistAdd{Name: "l3", Items: []AllowlistItem{{Value: "1.1.1.1"}}})
	h.must(CmdAllowlistRemove, T0+2*sec, AllowlistRemove{Name: "l3", Values: []string{"1.1.1.1"}})

	full := Alert{UUID: "4b1e0c1e", Scenario: "crowdsecurity/ssh-bf", ScenarioHash: "abc", ScenarioVersion: "0.3",
		Message: "Ip 1.2.3.4 performed ssh-bf", Leakspeed: "10s", EventsCount: 6, Capacity: 5, StartAt: T0 - mins, StopAt: T0,
		Remediation: true, Source: Source{Scope: "Ip", Value: "1.2.3.4", IP: "1.2.3.4", Range: "1.2.3.0/24", AsNumber: "64500",
			AsName: "EXAMPLE", Cn: "FR", Latitude: 48.8566, Longitude: 2.3522},
		Events: []Event{{Timestamp: T0 - mins, Meta: []KV{{Key: "service", Value: "ssh"}, {Key: "user", Value: "root"}}}, {Timestamp: T0}},
		Meta:   []KV{{Key: "target_user", Value: "root"}}}
	h.alert(T0+3*sec, "m1", full,
		withScenario(withOrigin(ban("1.2.3.4", T0+4*hour), "crowdsec"), "crowdsecurity/ssh-bf"),
		withType(ban("1.2.3.4", T0+hour), "captcha"))
	h.alert(T0+3*sec, "m2", Alert{Simulated: true, Scenario: "sim"}, withScope(ban("2001:db8::/64", T0+2*hour), "Range"))
	h.alert(T0+3*sec, "m1", Alert{Scenario: "no-decisions", Source: Source{Scope: "Ip", Value: "7.7.7.7"}})
	h.alert(T0+3*sec, "", Alert{Scenario: "update : +1/-0 IPs", Source: Source{Scope: "lists:firehol", Value: "x"}},
		withOrigin(withScope(ban("FR", T0+5*hour), "Country"), "CAPI"),
		withOrigin(withScope(ban("5.6.7.0/24", T0-hour), "Range"), "lists"))
	c1 := StreamCursor{Index: h.idx, LastPull: T0 + 10*sec}

	_, hand := h.alert(T0+20*sec, "", Alert{}, ban("9.9.9.9", T0+3*hour))
	h.expire(T0+30*sec, hand[0])
	doomed, _ := h.alert(T0+20*sec, "", Alert{}, ban("8.8.8.8", T0+2*hour), ban("2001:db8::8", T0+2*hour),
		withScope(ban("DE", T0+2*hour), "Country"))
	h.deleteAlerts(T0+40*sec, doomed)
	h.alert(T0+50*sec, "m2", Alert{}, ban("1.2.3.4", T0+hour), withScope(ban("10.0.0.0/8", T0+70*sec), "Range"),
		withScope(ban("10.200.0.0/16", T0+3*hour), "Range"))
	// enough decisions for multi-level B-trees
	for i := 0; i < 25; i++ {
		var ds []Decision
		for j := 0; j < 10; j++ {
			ds = append(ds, ban(fmt.Sprintf("172.20.%d.%d", i, j), T0+int64(i*10+j)*mins))
		}
		h.alert(T0+mins, "m1", Alert{Scenario: fmt.Sprintf("bulk-%d", i)}, ds...)
	}
	c2 := StreamCursor{Index: h.idx, LastPull: T0 + 2*mins}
	// allowlisting expires 10.200.0.0/16 (covering) but not the expired 5.6.7.0/24
	h.must(CmdAllowlistAdd, T0+3*mins, AllowlistAdd{Name: "l1", Items: []AllowlistItem{{Value: "10.200.1.0/24"}, {Value: "5.6.7.8"}}})
	h.must(CmdMachineUpdate, T0+4*mins, MachineUpdate{ID: "m2", Scenarios: ptr("x/y"), Validated: ptr(true)})
	h.must(CmdBouncerUpdate, T0+4*mins, BouncerUpdate{Name: "b2", Version: ptr("v1")})
	// CAPI work: config, a chunked community pull, a console allowlist, a
	// CAPI deletion
	h.must(CmdSetConfig, T0+5*mins, SetConfig{Key: "capi:token", Value: []byte("jwt")})
	h.must(CmdSetConfig, T0+5*mins, SetConfig{Key: "blocklist:fh:last_pull", Value: []byte("Wed, 01 Jan 2025 00:05:00 GMT")})
	pull := h.must(CmdImportDecisions, T0+5*mins, ImportDecisions{Alert: Alert{Scenario: "update : +3/-0 IPs",
		Source: Source{Scope: "crowdsecurity/community-blocklist"}}, Decisions: []Decision{
		capiBan("100.64.0.1", T0+26*hour), capiBan("100.64.0.2", T0+26*hour)}})
	h.must(CmdImportDecisions, T0+5*mins, ImportDecisions{AlertID: pull.IDs[0], Decisions: []Decision{
		withScope(capiBan("2001:db8:c::/48", T0+26*hour), "Range")}})
	h.must(CmdExpireByValue, T0+6*mins, ExpireByValue{Origin: "CAPI", Items: []ValueRef{{Scope: "Ip", Value: "100.64.0.2"}}})
	h.must(CmdAllowlistReplace, T0+6*mins, AllowlistReplace{Name: "console", AllowlistID: "cid", Description: "from console",
		Items: []AllowlistItem{{Value: "203.0.113.0/24", Comment: "partner"}}})
	// drops the expired allowlist item
	h.must(CmdFlush, T0+80*mins, Flush{})
	h.must(CmdAuditAppend, T0+81*mins, AuditAppend{Node: "n1", Who: "cert:alice", Action: "decision.add", Target: "1.2.3.4", Detail: "4h ban"})
	h.must(CmdAuditAppend, T0+82*mins, AuditAppend{Node: "n2", Who: "link:bob", Action: "unban"})

	w := &world{h: h, now: T0 + 90*mins,
		probes: []string{"100.64.0.1", "203.0.113.9", "2001:db8:c::1", "1.2.3.4", "1.2.3.0/24", "2001:db8::1", "10.200.1.1", "8.8.8.8", "192.168.1.1", "5.6.7.8",
			"2001:db8:dead::1", "172.20.3.4", "172.16.5.5", "0.0.0.0/0"}}
	all := DecisionFilter{IncludeSimulated: true}
	def := DecisionFilter{Scopes: ipScopes}
	w.streams = []streamQuery{
		{"startup default", def, StreamCursor{}, true},
		{"startup all", all, StreamCursor{}, true},
		{"startup no dedup", DecisionFilter{IncludeSimulated: true, NoDedup: true}, StreamCursor{}, true},
		{"delta c1 default", def, c1, false},
		{"delta c1 all", all, c1, false},
		{"delta c2 all", all, c2, false},
		{"delta c1 index only", all, StreamCursor{Index: c1.Index}, false},
		{"delta c1 ip 8.8.8.8", DecisionFilter{Scopes: ipScopes, IP: rangeOf(t, "8.8.8.8"), Contains: true}, c1, false},
		{"delta c1 inside ::/0", DecisionFilter{IP: rangeOf(t, "::/0"), IncludeSimulated: true}, c1, false},
		{"delta c1 origins", DecisionFilter{Origins: []string{"cscli"}, ScenariosNot: []string{"bulk"}}, c1, false},
	}
	return w
}

func (w *world) dump(t testing.TB, f *FSM) dump {
	t.Helper()
	return takeDump(t, f, w.now, w.probes, w.streams)
}

func TestPopulateIsRich(t *testing.T) {
	// guard against a fixture that silently stops covering record kinds
	w := populate(t)
	d := w.dump(t, w.h.f)
	if len(d.Machines) != 2 || len(d.Bouncers) != 2 || len(d.Allowlists) != 4 || len(d.Alerts) != 32 || len(d.Config) != 2 {
		t.Errorf("fixture: %d machines %d bouncers %d allowlists %d alerts", len(d.Machines), len(d.Bouncers), len(d.Allowlists), len(d.Alerts))
	}
	if len(d.Audit) != 2 {
		t.Errorf("fixture: %d audit records, want 2", len(d.Audit))
	}
	if len(d.Tombstones) != 3 {
		t.Errorf("fixture: %d tombstones, want 3", len(d.Tombstones))
	}
	hand := 0
	for _, x := range d.Stored {
		if x.D.DeletedIndex > 0 {
			hand++
		}
	}
	if hand != 3 { // 9.9.9.9 by hand, 10.200.0.0/16 by the allowlist, 100.64.0.2 by CAPI
		t.Errorf("fixture: %d hand-expired decisions, want 2", hand)
	}
	for name, s := range d.Streams {
		if len(s.New)+len(s.Deleted) == 0 && !strings.Contains(name, "origins") {
			t.Errorf("fixture: stream %q is empty", name)
		}
	}
	if items := d.Allowlists[1].Items; len(items) != 4 { // l1: 172.16.5.5 flushed, two added
		t.Errorf("fixture: l1 has %d items", len(items))
	}
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	w := populate(t)
	orig := w.h.f
	want := w.dump(t, orig)

	r := roundTrip(t, orig)
	checkIndexInvariants(t, orig)
	checkIndexInvariants(t, r)
	compareDumps(t, "restored", w.dump(t, r), want)
	if r.AppliedIndex() != w.h.idx {
		t.Errorf("restored applied index = %d, want %d", r.AppliedIndex(), w.h.idx)
	}
	// single-record lookups too
	if m := r.Machine("m1"); m == nil || string(m.PasswordHash) != "$2a$10$hash" || string(m.HubState) != `{"parsers":[]}` {
		t.Errorf("restored m1 = %+v", m)
	}
	if b := r.BouncersByKey("kh1"); len(b) != 1 || b[0].Cursor != 4 {
		t.Errorf("restored BouncersByKey = %v", b)
	}
	if a := r.Alert(1); a == nil || a.Source.Latitude != float32(48.8566) || len(a.Events) != 2 || a.Events[0].Meta[1].Value != "root" {
		t.Errorf("restored alert 1 = %+v", a)
	}

	// both continue identically: same IDs for the same next entry
	next := entry(t, CmdAlertsCreate, w.now, AlertsCreate{MachineID: "m1", Alerts: []NewAlert{
		{Alert: Alert{Scenario: "after"}, Decisions: []Decision{ban("1.2.3.4", w.now+9*hour), ban("3.3.3.3", w.now+hour)}},
		{Alert: Alert{Scenario: "after2"}}}})
	idx := w.h.idx + 1
	ro := orig.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: next}).(*Result)
	rr := r.Apply(&raft.Log{Index: idx, Type: raft.LogCommand, Data: next}).(*Result)
	if !equalIDs(ro.IDs, rr.IDs) || ro.IDs[0] != want.NextAlertID {
		t.Errorf("next alert IDs: original %v, restored %v (want to start at %d)", ro.IDs, rr.IDs, want.NextAlertID)
	}
	if a := r.Alert(rr.IDs[0]); a == nil || !equalIDs(a.DecisionIDs, []int64{want.NextDecisionID, want.NextDecisionID + 1}) {
		t.Errorf("next decision IDs on restored FSM: %+v", a)
	}
	compareDumps(t, "restored after one more entry", w.dump(t, r), w.dump(t, orig))
}

// The snapshot is taken between applies and persisted later, while the FSM
// keeps applying: it must still hold the state as of Snapshot().
func TestSnapshotIsCopyOnWrite(t *testing.T) {
	w := populate(t)
	f := w.h.f
	early, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	late, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	earlyBytes := persist(t, early)
	before := w.dump(t, f)

	mutateEverything(t, w)
	checkIndexInvariants(t, f)
	if compareQuiet(t, w.dump(t, f), before) {
		t.Fatal("mutations did not change the state; the test proves nothing")
	}

	lateBytes := persist(t, late)
	compareDumps(t, "snapshot persisted after more applies", w.dump(t, restored(t, lateBytes)), w.dump(t, restored(t, earlyBytes)))
	if r := restored(t, lateBytes); r.AppliedIndex() != before.LastIndex {
		t.Errorf("late snapshot index = %d, want %d", r.AppliedIndex(), before.LastIndex)
	}
}

// Persist runs on raft's snapshot goroutine concurrently with Apply (run
// with -race).
func TestSnapshotPersistConcurrentWithApply(t *testing.T) {
	w := populate(t)
	f := w.h.f
	early, _ := f.Snapshot()
	earlyBytes := persist(t, early)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	var wg sync.WaitGroup
	var perr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		perr = snap.Persist(sink)
	}()
	// readers run concurrently as well
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(w.now))
			f.Decisions(&DecisionFilter{IP: rangeOf(t, "172.20.0.0/16"), Contains: false}, at(w.now))
			f.Machines()
		}
	}()
	mutateEverything(t, w)
	wg.Wait()
	if perr != nil {
		t.Fatalf("persist: %v", perr)
	}
	compareDumps(t, "concurrently persisted snapshot", w.dump(t, restored(t, sink.Bytes())), w.dump(t, restored(t, earlyBytes)))
}

// mutateEverything applies commands touching every record kind.
func mutateEverything(t testing.TB, w *world) {
	t.Helper()
	h := w.h
	ts := T0 + 85*mins
	h.must(CmdMachineUpdate, ts, MachineUpdate{ID: "m1", IP: ptr("10.9.9.9"), HubState: []byte(`{}`), Validated: ptr(false)})
	h.must(CmdMachineCreate, ts, MachineCreate{Force: true, Machine: Machine{ID: "m2", PasswordHash: []byte("new")}})
	h.must(CmdMachineCreate, ts, MachineCreate{Machine: Machine{ID: "m3"}})
	h.must(CmdBouncerDelete, ts, BouncerDelete{Names: []string{"b2"}})
	h.must(CmdBouncerUpdate, ts, BouncerUpdate{Name: "b1", IP: ptr("10.0.0.10")})
	h.must(CmdTouch, ts, Touch{Machines: []MachineTouch{{ID: "m1", LastHeartbeat: ts}}, Bouncers: []BouncerTouch{{Name: "b1", LastPull: ts, Cursor: h.idx}}})
	h.must(CmdAllowlistAdd, ts, AllowlistAdd{Name: "l1", Items: []AllowlistItem{{Value: "172.20.0.0/20"}}}) // expires many
	h.must(CmdAllowlistRemove, ts, AllowlistRemove{Name: "l1", Values: []string{"192.168.0.0/16"}})
	h.must(CmdAllowlistDelete, ts, AllowlistDelete{Name: "l2"})
	h.must(CmdAllowlistCreate, ts, AllowlistCreate{Name: "l4"})
	h.expire(ts, 1, 2, 3)
	h.deleteAlerts(ts, 1, 5, 10, 11, 12)
	for i := 0; i < 30; i++ {
		var ds []Decision
		for j := 0; j < 10; j++ {
			ds = append(ds, ban(fmt.Sprintf("172.21.%d.%d", i, j), ts+hour))
		}
		h.alert(ts, "m1", Alert{Scenario: "more"}, ds...)
	}
	h.must(CmdSetConfig, ts, SetConfig{Key: "capi:token", Value: []byte("jwt2")})
	h.must(CmdSetConfig, ts, SetConfig{Key: "blocklist:fh:last_pull"})
	h.must(CmdImportDecisions, ts, ImportDecisions{Alert: Alert{Scenario: "update"}, Decisions: []Decision{
		capiBan("100.64.0.1", ts+24*hour), capiBan("100.64.0.9", ts+24*hour)}})
	h.must(CmdAllowlistReplace, ts, AllowlistReplace{Name: "console2", AllowlistID: "cid", Items: []AllowlistItem{{Value: "100.64.0.0/10"}}})
	h.must(CmdExpireSet, ts, ExpireSet{Origin: "CAPI", Scenario: "crowdsecurity/ssh-bf"})
	h.must(CmdFlush, ts+mins, Flush{MaxItems: 20})
	h.must(CmdAuditAppend, ts+mins, AuditAppend{Node: "n3", Who: "cli:uid=0", Action: "flush"})
}

// compareQuiet reports whether two dumps are equal.
func compareQuiet(t testing.TB, a, b dump) bool {
	ja, jb := componentsJSON(t, a), componentsJSON(t, b)
	for k := range jb {
		if ja[k] != jb[k] {
			return false
		}
	}
	return len(ja) == len(jb)
}

// Tombstones keep their IP range through a snapshot: a node restored from a
// snapshot must answer an IP-filtered stream exactly like a node that
// replayed the log (replicas must not diverge).
func TestRestoreKeepsTombstoneRange(t *testing.T) {
	h := newHarness(t)
	aid, ids := h.alert(T0, "", Alert{}, ban("8.8.8.8", T0+hour))
	_, _, idx := h.f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(T0))
	h.deleteAlerts(T0+sec, aid)
	flt := func() *DecisionFilter {
		return &DecisionFilter{Scopes: ipScopes, IP: rangeOf(t, "8.8.8.8"), Contains: true}
	}
	cur := StreamCursor{Index: idx, LastPull: T0}
	_, deleted, _ := h.f.Stream(flt(), cur, false, at(T0+2*sec))
	checkIDs(t, "before snapshot", deleted, ids[0])

	r := roundTrip(t, h.f)
	_, deleted, _ = r.Stream(flt(), cur, false, at(T0+2*sec))
	checkIDs(t, "after restore", deleted, ids[0])
}

func TestRestoreReplacesState(t *testing.T) {
	w := populate(t)
	data := persist(t, mustSnapshot(t, w.h.f))
	// a node with other (diverged) state gets the snapshot
	other := newHarness(t)
	other.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "stale"}})
	other.dec(T0, ban("6.6.6.6", T0+100*hour))
	other.must(CmdSetJWTKey, T0, SetJWTKey{Key: []byte("other")})
	if err := other.f.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	compareDumps(t, "restored over existing state", w.dump(t, other.f), w.dump(t, restored(t, data)))
	if other.f.Machine("stale") != nil {
		t.Error("stale machine survived the restore")
	}
}

func mustSnapshot(t testing.TB, f *FSM) raft.FSMSnapshot {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRestoreErrorsKeepState(t *testing.T) {
	w := populate(t)
	f := w.h.f
	before := w.dump(t, f)
	good := persist(t, mustSnapshot(t, f))
	cut := len(good) / 2
	if good[cut-1] == '\n' {
		cut-- // cut inside a record, not between two
	}
	for name, data := range map[string][]byte{
		"garbage":     []byte("this is not json\n"),
		"truncated":   good[:cut],
		"bad version": []byte(`{"meta":{"version":2,"next_alert_id":1,"next_decision_id":1,"last_index":1}}` + "\n"),
	} {
		rc := &closeTracker{Reader: bytes.NewReader(data)}
		if err := f.Restore(rc); err == nil {
			t.Errorf("%s: restore succeeded", name)
		}
		if !rc.closed {
			t.Errorf("%s: reader not closed", name)
		}
		compareDumps(t, name, w.dump(t, f), before)
	}
	// an empty stream is an empty state
	e := restored(t, nil)
	if len(e.Machines()) != 0 || e.JWTKey() != nil {
		t.Error("empty snapshot gave records")
	}
}

func TestPersistErrorCancelsSink(t *testing.T) {
	w := populate(t)
	snap := mustSnapshot(t, w.h.f)
	sink := &memSink{failWrites: true}
	err := snap.Persist(sink)
	if !errors.Is(err, errSinkFull) {
		t.Errorf("persist error = %v, want the sink's error", err)
	}
	if !sink.cancelled || sink.closed {
		t.Errorf("sink cancelled=%v closed=%v, want cancelled only", sink.cancelled, sink.closed)
	}
}
