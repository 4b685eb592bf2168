package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSetJWTKeyOnlyOnce(t *testing.T) {
	h := newHarness(t)
	if k := h.f.JWTKey(); k != nil {
		t.Fatalf("new FSM has JWT key %q", k)
	}
	if res := h.must(CmdSetJWTKey, T0, SetJWTKey{}); res.N != 0 {
		t.Errorf("empty key: N = %d, want 0", res.N)
	}
	if k := h.f.JWTKey(); len(k) != 0 {
		t.Fatalf("empty key was stored: %q", k)
	}
	if res := h.must(CmdSetJWTKey, T0, SetJWTKey{Key: []byte("first")}); res.N != 1 {
		t.Errorf("first key: N = %d, want 1", res.N)
	}
	if res := h.must(CmdSetJWTKey, T0+sec, SetJWTKey{Key: []byte("second")}); res.N != 0 {
		t.Errorf("second key: N = %d, want 0", res.N)
	}
	if k := h.f.JWTKey(); string(k) != "first" {
		t.Fatalf("JWT key = %q, want %q", k, "first")
	}
}

func TestMachineCreate(t *testing.T) {
	h := newHarness(t)
	m := Machine{ID: "m1", PasswordHash: []byte("h1"), IP: "10.0.0.1", AuthType: AuthPassword, Version: "v1",
		CreatedAt: 42, UpdatedAt: 43}
	if res := h.must(CmdMachineCreate, T0, MachineCreate{Machine: m}); res.N != 1 {
		t.Errorf("create: N = %d, want 1", res.N)
	}
	got := h.f.Machine("m1")
	if got == nil {
		t.Fatal("machine m1 not stored")
	}
	if got.CreatedAt != T0 || got.UpdatedAt != T0 {
		t.Errorf("timestamps = %d/%d, want command time %d", got.CreatedAt, got.UpdatedAt, T0)
	}
	if string(got.PasswordHash) != "h1" || got.IP != "10.0.0.1" || got.AuthType != AuthPassword || got.Version != "v1" || got.Validated {
		t.Errorf("stored machine = %+v", got)
	}

	// duplicate without force
	res := h.apply(CmdMachineCreate, T0+sec, MachineCreate{Machine: Machine{ID: "m1", PasswordHash: []byte("h2"), Validated: true}})
	if res.Err() == nil || res.Err().Error() != "user 'm1': user already exist" {
		t.Fatalf("duplicate: err = %v, want \"user 'm1': user already exist\"", res.Err())
	}
	if res.N != 0 {
		t.Errorf("duplicate: N = %d, want 0", res.N)
	}
	if after := h.f.Machine("m1"); after != got {
		t.Errorf("duplicate changed the machine: %+v", after)
	}

	// force: new password, validated, keeps the rest
	res = h.must(CmdMachineCreate, T0+2*sec, MachineCreate{Force: true,
		Machine: Machine{ID: "m1", PasswordHash: []byte("h3"), Validated: true, IP: "10.9.9.9"}})
	if res.N != 1 {
		t.Errorf("force: N = %d, want 1", res.N)
	}
	forced := h.f.Machine("m1")
	if string(forced.PasswordHash) != "h3" || !forced.Validated {
		t.Errorf("force: password %q validated %v, want h3 true", forced.PasswordHash, forced.Validated)
	}
	if forced.CreatedAt != T0 || forced.UpdatedAt != T0+2*sec {
		t.Errorf("force: timestamps %d/%d, want %d/%d", forced.CreatedAt, forced.UpdatedAt, T0, T0+2*sec)
	}
	if forced.IP != "10.0.0.1" || forced.Version != "v1" {
		t.Errorf("force changed other fields: %+v", forced)
	}
	// the old record is untouched (copy-on-write)
	if string(got.PasswordHash) != "h1" || got.Validated {
		t.Errorf("force mutated the previous record in place: %+v", got)
	}
	// force never un-validates
	h.must(CmdMachineCreate, T0+3*sec, MachineCreate{Force: true, Machine: Machine{ID: "m1", PasswordHash: []byte("h4")}})
	if m := h.f.Machine("m1"); !m.Validated || string(m.PasswordHash) != "h4" {
		t.Errorf("force with validated=false: %+v", m)
	}
	// force on a new machine simply creates it
	h.must(CmdMachineCreate, T0+4*sec, MachineCreate{Force: true, Machine: Machine{ID: "m2", Validated: true}})
	if m := h.f.Machine("m2"); m == nil || !m.Validated || m.CreatedAt != T0+4*sec {
		t.Errorf("force-create m2: %+v", m)
	}
	if ms := h.f.Machines(); len(ms) != 2 || ms[0].ID != "m1" || ms[1].ID != "m2" {
		t.Errorf("Machines() = %v", ms)
	}
}

func TestMachineUpdate(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m1", IP: "1.1.1.1", Version: "v1",
		Scenarios: "a,b", OSName: "linux", OSVersion: "6", FeatureFlags: "x", HubState: []byte(`{"h":1}`),
		Datasources: []byte(`{"d":1}`), Validated: true}})

	// an empty patch changes nothing visible
	h.must(CmdMachineUpdate, T0+sec, MachineUpdate{ID: "m1"})
	m := h.f.Machine("m1")
	if m.IP != "1.1.1.1" || m.Version != "v1" || m.Scenarios != "a,b" || m.OSName != "linux" || m.OSVersion != "6" ||
		m.FeatureFlags != "x" || string(m.HubState) != `{"h":1}` || string(m.Datasources) != `{"d":1}` || !m.Validated {
		t.Errorf("empty patch changed fields: %+v", m)
	}

	res := h.must(CmdMachineUpdate, T0+2*sec, MachineUpdate{ID: "m1", IP: ptr("2.2.2.2"), Version: ptr("v2"),
		OSName: ptr("freebsd"), OSVersion: ptr("14"), FeatureFlags: ptr("y,z"), HubState: []byte(`{"h":2}`),
		Datasources: []byte(`{"d":2}`), Validated: ptr(false)})
	if res.N != 1 {
		t.Errorf("update: N = %d, want 1", res.N)
	}
	m = h.f.Machine("m1")
	if m.IP != "2.2.2.2" || m.Version != "v2" || m.OSName != "freebsd" || m.OSVersion != "14" || m.FeatureFlags != "y,z" ||
		string(m.HubState) != `{"h":2}` || string(m.Datasources) != `{"d":2}` || m.Validated {
		t.Errorf("patched machine = %+v", m)
	}
	if m.Scenarios != "a,b" {
		t.Errorf("scenarios changed without being patched: %q", m.Scenarios)
	}

	// scenarios bump updated_at (lapi.md §4.2)
	h.must(CmdMachineUpdate, T0+3*sec, MachineUpdate{ID: "m1", Scenarios: ptr("c"), Validated: ptr(true)})
	m = h.f.Machine("m1")
	if m.Scenarios != "c" || !m.Validated || m.UpdatedAt != T0+3*sec || m.CreatedAt != T0 {
		t.Errorf("scenario update: %+v", m)
	}

	res = h.apply(CmdMachineUpdate, T0+4*sec, MachineUpdate{ID: "nope", IP: ptr("3.3.3.3")})
	if !errors.Is(res.Err(), ErrNotFound) {
		t.Errorf("update of unknown machine: err = %v, want ErrNotFound", res.Err())
	}
	if h.f.Machine("nope") != nil {
		t.Error("update created an unknown machine")
	}
}

func TestMachineDelete(t *testing.T) {
	h := newHarness(t)
	for _, id := range []string{"a", "b", "c"} {
		h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: id}})
	}
	if res := h.must(CmdMachineDelete, T0, MachineDelete{IDs: []string{"a", "c"}}); res.N != 2 {
		t.Errorf("delete a,c: N = %d, want 2", res.N)
	}
	if h.f.Machine("a") != nil || h.f.Machine("c") != nil || h.f.Machine("b") == nil {
		t.Errorf("machines after delete: %v", h.f.Machines())
	}
	res := h.apply(CmdMachineDelete, T0, MachineDelete{IDs: []string{"b", "zz"}})
	if res.Err() == nil || res.Err().Error() != "'zz' does not exist" {
		t.Errorf("delete unknown: err = %v, want \"'zz' does not exist\"", res.Err())
	}
	if res.N != 1 || h.f.Machine("b") != nil {
		t.Errorf("delete b,zz: N = %d, b still there = %v", res.N, h.f.Machine("b") != nil)
	}
	if ms := h.f.Machines(); len(ms) != 0 {
		t.Errorf("machines left: %v", ms)
	}
}

func TestBouncerCommands(t *testing.T) {
	h := newHarness(t)
	b := Bouncer{Name: "fw", KeyHash: "k1", AuthType: AuthAPIKey, IP: "10.0.0.1", Type: "cs-firewall-bouncer", CreatedAt: 1, LastPull: 7}
	if res := h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: b}); res.N != 1 {
		t.Errorf("create: N = %d", res.N)
	}
	got := h.f.Bouncer("fw")
	if got == nil || got.CreatedAt != T0 || got.UpdatedAt != T0 || got.KeyHash != "k1" || got.IP != "10.0.0.1" || got.LastPull != 7 {
		t.Fatalf("stored bouncer = %+v", got)
	}
	res := h.apply(CmdBouncerCreate, T0+sec, BouncerCreate{Bouncer: Bouncer{Name: "fw", KeyHash: "k2"}})
	if res.Err() == nil || !strings.Contains(res.Err().Error(), "already exists") {
		t.Errorf("duplicate bouncer: err = %v", res.Err())
	}
	if h.f.Bouncer("fw").KeyHash != "k1" {
		t.Error("duplicate create overwrote the bouncer")
	}

	h.must(CmdBouncerCreate, T0+sec, BouncerCreate{Bouncer: Bouncer{Name: "fw2", KeyHash: "k1"}})
	h.must(CmdBouncerCreate, T0-sec, BouncerCreate{Bouncer: Bouncer{Name: "old", KeyHash: "k3"}})
	names := []string{}
	for _, b := range h.f.Bouncers() {
		names = append(names, b.Name)
	}
	if strings.Join(names, ",") != "old,fw,fw2" {
		t.Errorf("Bouncers() order = %v, want old,fw,fw2 (creation time)", names)
	}
	byKey := h.f.BouncersByKey("k1")
	if len(byKey) != 2 || byKey[0].Name != "fw" || byKey[1].Name != "fw2" {
		t.Errorf("BouncersByKey(k1) = %v", byKey)
	}

	res = h.must(CmdBouncerUpdate, T0+2*sec, BouncerUpdate{Name: "fw", IP: ptr("10.0.0.2"), Version: ptr("v0.0.30"),
		OSName: ptr("linux"), OSVersion: ptr("6.1"), FeatureFlags: ptr("ff")})
	if res.N != 1 {
		t.Errorf("update: N = %d", res.N)
	}
	u := h.f.Bouncer("fw")
	if u.IP != "10.0.0.2" || u.Version != "v0.0.30" || u.OSName != "linux" || u.OSVersion != "6.1" || u.FeatureFlags != "ff" {
		t.Errorf("patched bouncer = %+v", u)
	}
	if u.Type != "cs-firewall-bouncer" || u.KeyHash != "k1" || u.CreatedAt != T0 || u.UpdatedAt != T0+2*sec {
		t.Errorf("unpatched fields/timestamps = %+v", u)
	}
	if got.IP != "10.0.0.1" {
		t.Error("update mutated the previous record in place")
	}
	h.must(CmdBouncerUpdate, T0+3*sec, BouncerUpdate{Name: "fw", Type: ptr("custom")})
	if u := h.f.Bouncer("fw"); u.Type != "custom" || u.IP != "10.0.0.2" {
		t.Errorf("type patch = %+v", u)
	}
	if res := h.apply(CmdBouncerUpdate, T0, BouncerUpdate{Name: "nope", IP: ptr("x")}); !errors.Is(res.Err(), ErrNotFound) {
		t.Errorf("update unknown bouncer: err = %v, want ErrNotFound", res.Err())
	}

	res = h.must(CmdBouncerDelete, T0, BouncerDelete{Names: []string{"fw", "missing", "old"}})
	if res.N != 2 {
		t.Errorf("delete: N = %d, want 2", res.N)
	}
	if h.f.Bouncer("fw") != nil || h.f.Bouncer("old") != nil || h.f.Bouncer("fw2") == nil {
		t.Errorf("bouncers after delete: %v", h.f.Bouncers())
	}
}

func TestAlertsCreate(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "agent"}})

	a1 := Alert{ID: 999, CreatedAt: 5, DecisionIDs: []int64{77}, MachineID: "spoofed", Scenario: "crowdsecurity/ssh-bf",
		Source: Source{Scope: "Ip", Value: "1.2.3.4"}, Events: []Event{{Timestamp: 1, Meta: []KV{{Key: "k", Value: "v"}}}},
		Meta: []KV{{Key: "m", Value: "n"}}, StartAt: T0 - hour, StopAt: T0}
	d1 := ban("1.2.3.4", T0+hour)
	d1.ID, d1.AlertID, d1.CreatedAt, d1.CreatedIndex, d1.DeletedIndex, d1.Simulated = 555, 556, 557, 558, 559, true
	d2 := withScope(ban("10.0.0.0/8", T0+2*hour), "Range")
	a2 := Alert{Simulated: true, Scenario: "sim"}
	d3 := ban("5.6.7.8", T0+hour) // Simulated false in the decision, true in the alert
	body := AlertsCreate{MachineID: "agent", Alerts: []NewAlert{{Alert: a1, Decisions: []Decision{d1, d2}}, {Alert: a2, Decisions: []Decision{d3}}}}
	ts := T0 + 10*sec
	res := h.must(CmdAlertsCreate, ts, body)
	idx := h.idx
	if !equalIDs(res.IDs, []int64{1, 2}) || res.N != 2 {
		t.Fatalf("result = %+v, want IDs [1 2] N 2", res)
	}
	al1, al2 := h.f.Alert(1), h.f.Alert(2)
	if al1 == nil || al2 == nil {
		t.Fatal("alerts not stored")
	}
	if al1.CreatedAt != ts || al2.CreatedAt != ts {
		t.Errorf("alert created_at = %d/%d, want %d", al1.CreatedAt, al2.CreatedAt, ts)
	}
	if al1.MachineID != "agent" || al2.MachineID != "agent" {
		t.Errorf("machine IDs = %q/%q", al1.MachineID, al2.MachineID)
	}
	if !equalIDs(al1.DecisionIDs, []int64{1, 2}) || !equalIDs(al2.DecisionIDs, []int64{3}) {
		t.Errorf("decision IDs = %v / %v, want [1 2] / [3]", al1.DecisionIDs, al2.DecisionIDs)
	}
	if al1.Scenario != "crowdsecurity/ssh-bf" || al1.Source.Value != "1.2.3.4" || len(al1.Events) != 1 ||
		al1.Events[0].Meta[0].Value != "v" || al1.Meta[0].Key != "m" || al1.StartAt != T0-hour || al1.StopAt != T0 {
		t.Errorf("alert fields not kept: %+v", al1)
	}
	for i, want := range []struct {
		id, alert int64
		sim       bool
		value     string
		bits      uint8
	}{{1, 1, false, "1.2.3.4", 32}, {2, 1, false, "10.0.0.0/8", 8}, {3, 2, true, "5.6.7.8", 32}} {
		d := h.f.Decision(want.id)
		if d == nil {
			t.Fatalf("decision %d missing", want.id)
		}
		if d.AlertID != want.alert || d.Simulated != want.sim || d.Value != want.value || d.CreatedAt != ts ||
			d.CreatedIndex != idx || d.DeletedIndex != 0 || d.Range.Fam != 4 || d.Range.Bits != want.bits {
			t.Errorf("decision #%d = %+v", i, d)
		}
	}
	if d := h.f.Decision(1); d.Until != T0+hour || d.Origin != "cscli" || d.Type != "ban" || d.Scope != "Ip" || d.Scenario != "manual ban" {
		t.Errorf("decision 1 fields not kept: %+v", d)
	}
	if m := h.f.Machine("agent"); m.LastPush != ts {
		t.Errorf("machine last_push = %d, want %d", m.LastPush, ts)
	}

	// IDs continue across commands; unknown machine: no owner, no crash.
	res = h.must(CmdAlertsCreate, ts+sec, AlertsCreate{MachineID: "ghost", Alerts: []NewAlert{{Alert: Alert{Scenario: "x"},
		Decisions: []Decision{ban("9.9.9.9", T0+hour)}}}})
	if !equalIDs(res.IDs, []int64{3}) {
		t.Errorf("second create IDs = %v, want [3]", res.IDs)
	}
	if a := h.f.Alert(3); a.MachineID != "" || !equalIDs(a.DecisionIDs, []int64{4}) {
		t.Errorf("alert 3 = %+v", a)
	}
	if h.f.Machine("ghost") != nil {
		t.Error("alert creation made a machine")
	}
	if m := h.f.Machine("agent"); m.LastPush != ts {
		t.Errorf("other machine's push moved last_push of agent: %d", m.LastPush)
	}

	// no alerts: last_push untouched
	h.must(CmdAlertsCreate, ts+2*sec, AlertsCreate{MachineID: "agent"})
	if m := h.f.Machine("agent"); m.LastPush != ts {
		t.Errorf("empty push moved last_push: %d", m.LastPush)
	}
	if a, _, tot := h.f.Counts(at(ts)); a != 3 || tot != 4 {
		t.Errorf("Counts = %d alerts %d decisions, want 3/4", a, tot)
	}
}

func TestAlertsCreateDiscardsInvalidIPDecisions(t *testing.T) {
	h := newHarness(t)
	ds := []Decision{
		ban("not-an-ip", T0+hour),                           // Ip scope, invalid: dropped
		withScope(ban("1.2.3.4/33", T0+hour), "range"),      // lower-case range scope, invalid: dropped
		withScope(ban("FR", T0+hour), "Country"),            // not an IP scope: kept, no range
		withScope(ban("1.2.3.0/24", T0+hour), "Ip"),         // Ip-scoped CIDR behaves like a range
		withScope(ban("::ffff:7.7.7.7", T0+hour), "ip"),     // mapped IPv6 is IPv4
		withScope(ban("2001:db8::1", T0+hour), "RANGE"),     // case-insensitive scope test
		withScope(ban("10.0.0.1", T0+hour), "AS"),           // IP-looking value in a non-IP scope
		withScope(ban("garbage", T0+hour), "crowdsec/ja4h"), // custom scope: kept
	}
	aid, ids := h.alert(T0, "", Alert{}, ds...)
	if len(ids) != 6 {
		t.Fatalf("stored decision IDs %v, want 6 kept", ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Errorf("decision IDs not increasing: %v", ids)
		}
	}
	values := []string{}
	for _, d := range h.f.AlertDecisions(h.f.Alert(aid)) {
		values = append(values, d.Value)
		switch d.Value {
		case "FR", "10.0.0.1", "garbage":
			if d.Range.Valid() {
				t.Errorf("%s/%s got an IP range %+v", d.Scope, d.Value, d.Range)
			}
		case "1.2.3.0/24":
			if d.Range.Fam != 4 || d.Range.Bits != 24 {
				t.Errorf("Ip-scoped CIDR range = %+v", d.Range)
			}
		case "::ffff:7.7.7.7":
			if d.Range != mustRange(t, "7.7.7.7").Prefix() {
				t.Errorf("mapped address range = %+v", d.Range)
			}
		case "2001:db8::1":
			if d.Range.Fam != 6 || d.Range.Bits != 128 {
				t.Errorf("IPv6 range = %+v", d.Range)
			}
		}
	}
	if strings.Join(values, " ") != "FR 1.2.3.0/24 ::ffff:7.7.7.7 2001:db8::1 10.0.0.1 garbage" {
		t.Errorf("stored values = %v", values)
	}
	// The non-IP "10.0.0.1" decision never matches an IP filter.
	got := h.f.Decisions(&DecisionFilter{IP: rangeOf(t, "10.0.0.1"), Contains: true, IncludeSimulated: true}, at(T0))
	checkIDs(t, "ip=10.0.0.1", got)
	// next IDs keep increasing past discarded ones
	next := h.dec(T0, ban("1.1.1.1", T0+hour))
	if next <= ids[len(ids)-1] {
		t.Errorf("next decision ID %d not above %d", next, ids[len(ids)-1])
	}
}

func TestAlertsDelete(t *testing.T) {
	h := newHarness(t)
	a1, d1 := h.alert(T0, "", Alert{}, ban("1.1.1.1", T0+hour), ban("1.1.1.2", T0+sec), withScope(ban("DE", T0+hour), "Country"))
	a2, d2 := h.alert(T0, "", Alert{}, ban("2.2.2.2", T0+hour))
	h.expire(T0+2*sec, d1[0]) // hand-expired before the alert goes
	_, _, cursor := h.f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(T0+3*sec))

	del := T0 + 10*sec
	res := h.deleteAlerts(del, a1, 12345)
	delIdx := h.idx
	if res.N != 1 {
		t.Errorf("delete: N = %d, want 1 (unknown IDs not counted)", res.N)
	}
	if h.f.Alert(a1) != nil {
		t.Error("alert still stored")
	}
	for _, id := range d1 {
		if h.f.Decision(id) != nil {
			t.Errorf("decision %d of the deleted alert still stored", id)
		}
	}
	if h.f.Decision(d2[0]) == nil || h.f.Alert(a2) == nil {
		t.Error("other alert or its decision deleted")
	}
	if a, act, tot := h.f.Counts(at(del)); a != 1 || act != 1 || tot != 1 {
		t.Errorf("Counts = %d/%d/%d, want 1/1/1", a, act, tot)
	}
	// no trace in any index
	checkIDs(t, "ip=1.1.1.1", h.f.Decisions(&DecisionFilter{IP: rangeOf(t, "1.1.1.1"), Contains: true}, at(T0)))
	checkIDs(t, "value=DE", h.f.Decisions(&DecisionFilter{Value: "DE"}, at(T0)))
	if n := h.f.CountDecisions("1.1.1.2", time.Time{}, false, at(del)); n != 0 {
		t.Errorf("CountDecisions after delete = %d", n)
	}
	// A bouncer that pulled after the hand expiry must learn that DE, still
	// active at the deletion, is gone. Re-reporting the two decisions of the
	// alert that had already expired is allowed (duplicates are harmless,
	// lapi.md §8); nothing else may show up.
	_, deleted, _ := h.f.Stream(&DecisionFilter{}, StreamCursor{Index: cursor, LastPull: T0 + 3*sec}, false, at(del+sec))
	sawDE := false
	for _, tb := range deleted {
		switch tb.ID {
		case d1[2]:
			sawDE = true
			if tb.Until != del || tb.DeletedIndex != delIdx || tb.Value != "DE" {
				t.Errorf("tombstone %+v: want until %d deleted index %d", tb, del, delIdx)
			}
		case d1[0], d1[1]:
			if tb.Until > T0+2*sec {
				t.Errorf("re-reported decision %d with until %d after its expiry", tb.ID, tb.Until)
			}
		default:
			t.Errorf("unexpected decision %d (%s) in delta deleted", tb.ID, tb.Value)
		}
	}
	if !sawDE {
		t.Errorf("delta deleted %v lacks the tombstone of active decision %d", idsOf(deleted), d1[2])
	}
	// startup answers never list hard-deleted decisions
	_, deleted, _ = h.f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(del+sec))
	checkIDs(t, "startup deleted", deleted)
	// deleting again is a no-op
	if res := h.deleteAlerts(del+sec, a1); res.N != 0 {
		t.Errorf("second delete N = %d", res.N)
	}
}

func TestDecisionsExpire(t *testing.T) {
	h := newHarness(t)
	_, ids := h.alert(T0, "", Alert{}, ban("1.1.1.1", T0+hour), ban("1.1.1.0/24", T0+hour), ban("2.2.2.2", T0+sec))
	ts := T0 + mins
	res := h.expire(ts, ids[0], 999)
	idx := h.idx
	if res.N != 1 {
		t.Errorf("expire: N = %d, want 1", res.N)
	}
	d := h.f.Decision(ids[0])
	if d.Until != ts || d.DeletedIndex != idx {
		t.Errorf("expired decision until=%d di=%d, want %d/%d", d.Until, d.DeletedIndex, ts, idx)
	}
	if d.CreatedIndex == 0 || d.CreatedAt != T0 || d.Value != "1.1.1.1" || d.Range != mustRange(t, "1.1.1.1").Prefix() {
		t.Errorf("expire changed other fields: %+v", d)
	}
	// no longer active anywhere, still indexed by IP for counts
	checkIDs(t, "covering 1.1.1.1 after expire", h.f.Decisions(&DecisionFilter{IP: rangeOf(t, "1.1.1.1"), Contains: true}, at(ts+1)), ids[1])
	if got := h.f.MatchActive(&DecisionFilter{}, at(ts)); !equalIDs(got, []int64{ids[1]}) {
		t.Errorf("MatchActive = %v, want [%d]", got, ids[1])
	}
	if n := h.f.CountDecisions("1.1.1.1", time.Time{}, false, at(ts+1)); n != 2 {
		t.Errorf("CountDecisions(all) = %d, want 2", n)
	}
	if n := h.f.CountDecisions("1.1.1.1", time.Time{}, true, at(ts+1)); n != 1 {
		t.Errorf("CountDecisions(active) = %d, want 1", n)
	}
	// an already expired decision keeps its earlier until but is marked
	res = h.expire(ts+sec, ids[2])
	if res.N != 1 {
		t.Errorf("expire expired: N = %d, want 1", res.N)
	}
	if d := h.f.Decision(ids[2]); d.Until > ts+sec || d.DeletedIndex != h.idx {
		t.Errorf("expired-again decision = %+v", d)
	}
	if _, act, tot := h.f.Counts(at(ts + sec)); act != 1 || tot != 3 {
		t.Errorf("Counts active/total = %d/%d, want 1/3", act, tot)
	}
}

func TestFlushMaxAge(t *testing.T) {
	h := newHarness(t)
	a1 := h.dec(T0, ban("1.1.1.1", T0+10*hour))
	a2 := h.dec(T0+hour, ban("1.1.1.2", T0+10*hour))
	a3 := h.dec(T0+2*hour, ban("1.1.1.3", T0+10*hour))
	res := h.must(CmdFlush, T0+2*hour, Flush{MaxAge: hour})
	if res.N != 2 {
		t.Errorf("flush N = %d, want 2 (created_at <= now-max_age)", res.N)
	}
	if h.f.Decision(a1) != nil || h.f.Decision(a2) != nil || h.f.Decision(a3) == nil {
		t.Error("wrong decisions flushed")
	}
	if a := h.f.Alerts(&AlertFilter{}, at(T0)); len(a) != 1 || a[0].ID != 3 {
		t.Errorf("alerts left = %v", a)
	}
	// flushed active decisions become tombstones
	h.f.mu.Lock()
	nt := h.f.s.tombstones.Len()
	h.f.mu.Unlock()
	if nt != 2 {
		t.Errorf("tombstones = %d, want 2", nt)
	}
	// all off: nothing happens to alerts
	if res := h.must(CmdFlush, T0+100*hour, Flush{}); res.N != 0 || h.f.Alert(3) == nil {
		t.Errorf("flush without limits deleted alerts: N = %d", res.N)
	}
}

func TestFlushMaxItems(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < 10; i++ {
		h.alert(T0, "", Alert{}, ban("1.1.1.1", T0+hour))
	}
	if res := h.must(CmdFlush, T0, Flush{MaxItems: 10}); res.N != 0 {
		t.Errorf("max_items=count: N = %d", res.N)
	}
	res := h.must(CmdFlush, T0, Flush{MaxItems: 5})
	// CrowdSec deletes id < highest - max_items: 1..4
	if res.N != 4 {
		t.Errorf("max_items=5: N = %d, want 4", res.N)
	}
	var left []int64
	for _, a := range h.f.Alerts(&AlertFilter{Asc: true}, at(T0)) {
		left = append(left, a.ID)
	}
	if !equalIDs(left, []int64{5, 6, 7, 8, 9, 10}) {
		t.Errorf("alerts left = %v", left)
	}
	if a, _, tot := h.f.Counts(at(T0)); a != 6 || tot != 6 {
		t.Errorf("Counts = %d alerts %d decisions", a, tot)
	}
	// both limits at once, overlapping victims counted once
	h2 := newHarness(t)
	for i := 0; i < 6; i++ {
		h2.alert(T0+int64(i)*hour, "", Alert{})
	}
	if res := h2.must(CmdFlush, T0+5*hour, Flush{MaxAge: 3 * hour, MaxItems: 2}); res.N != 3 {
		t.Errorf("combined flush N = %d, want 3", res.N)
	}
	if a, _, _ := h2.f.Counts(at(T0)); a != 3 {
		t.Errorf("alerts left = %d, want 3", a)
	}
}

func TestFlushOrphansTombstonesAndAllowlistItems(t *testing.T) {
	h := newHarness(t)
	h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l"})
	h.must(CmdAllowlistAdd, T0, AllowlistAdd{Name: "l", Items: []AllowlistItem{
		{Value: "10.0.0.1", Expiration: T0 + hour}, {Value: "10.0.0.2"}, {Value: "10.0.0.3", Expiration: T0 + 3*hour}}})
	aid, _ := h.alert(T0, "", Alert{}, ban("1.1.1.1", T0+hour))
	h.deleteAlerts(T0+mins, aid) // tombstone with until = T0+1m
	tombUntil := T0 + mins
	live := h.dec(T0, ban("2.2.2.2", T0+sec))

	// Orphans (decisions whose alert is gone) cannot be produced by commands;
	// put them in the state the way an old snapshot could.
	h.f.mu.Lock()
	orphanExpired := &Decision{ID: 1000, AlertID: 0, Type: "ban", Scope: "Ip", Value: "3.3.3.3", Until: T0 + sec, Range: mustRange(t, "3.3.3.3").Prefix()}
	orphanGone := &Decision{ID: 1001, AlertID: 4242, Type: "ban", Scope: "Ip", Value: "3.3.3.4", Until: T0 + sec, Range: mustRange(t, "3.3.3.4").Prefix()}
	orphanActive := &Decision{ID: 1002, AlertID: 4242, Type: "ban", Scope: "Ip", Value: "3.3.3.5", Until: T0 + 100*hour, Range: mustRange(t, "3.3.3.5").Prefix()}
	h.f.s.addDecision(orphanExpired)
	h.f.s.addDecision(orphanGone)
	h.f.s.addDecision(orphanActive)
	h.f.mu.Unlock()

	// 2 h later: orphans expired go, tombstone (1 min old) stays, first item expired
	h.must(CmdFlush, T0+2*hour, Flush{})
	if h.f.Decision(1000) != nil || h.f.Decision(1001) != nil {
		t.Error("expired orphans not flushed")
	}
	if h.f.Decision(1002) == nil {
		t.Error("active orphan flushed")
	}
	if h.f.Decision(live) == nil {
		t.Error("expired decision with an alert flushed (only orphans go)")
	}
	if n := h.f.CountDecisions("3.3.3.3", time.Time{}, false, at(T0+2*hour)); n != 0 {
		t.Errorf("flushed orphan still in IP index (count %d)", n)
	}
	if al := h.f.Allowlist("l"); len(al.Items) != 2 || al.Items[0].Value != "10.0.0.2" || al.Items[1].Value != "10.0.0.3" {
		t.Errorf("allowlist items after flush = %+v", al.Items)
	}
	tombs := func() int {
		h.f.mu.Lock()
		defer h.f.mu.Unlock()
		return h.f.s.tombstones.Len()
	}
	if n := tombs(); n != 1 {
		t.Fatalf("tombstones = %d, want 1", n)
	}
	// exactly at the TTL it stays, just after it goes
	h.must(CmdFlush, tombUntil+tombstoneTTL, Flush{})
	if n := tombs(); n != 1 {
		t.Errorf("tombstone flushed at its TTL boundary")
	}
	h.must(CmdFlush, tombUntil+tombstoneTTL+1, Flush{})
	if n := tombs(); n != 0 {
		t.Errorf("tombstone older than 24h kept")
	}
	if al := h.f.Allowlist("l"); len(al.Items) != 1 || al.Items[0].Value != "10.0.0.2" {
		t.Errorf("allowlist items after late flush = %+v", al.Items)
	}
}

func TestAllowlistCommands(t *testing.T) {
	h := newHarness(t)
	if res := h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l1", Description: "d"}); res.N != 1 {
		t.Errorf("create N = %d", res.N)
	}
	al := h.f.Allowlist("l1")
	if al == nil || al.Description != "d" || al.CreatedAt != T0 || al.UpdatedAt != T0 || len(al.Items) != 0 {
		t.Fatalf("created allowlist = %+v", al)
	}
	if res := h.apply(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l1"}); res.Err() == nil || !strings.Contains(res.Err().Error(), "already exists") {
		t.Errorf("duplicate create: %v", res.Err())
	}
	if res := h.apply(CmdAllowlistAdd, T0, AllowlistAdd{Name: "nope", Items: []AllowlistItem{{Value: "1.1.1.1"}}}); res.Err() == nil || !strings.Contains(res.Err().Error(), "not found") {
		t.Errorf("add to unknown list: %v", res.Err())
	}

	res := h.must(CmdAllowlistAdd, T0+sec, AllowlistAdd{Name: "l1", Items: []AllowlistItem{
		{Value: "192.168.1.0/24", Comment: "lan", CreatedAt: 7}, {Value: "2001:db8::/32"}, {Value: "192.168.1.0/24"}}})
	if res.N != 2 {
		t.Errorf("add N = %d, want 2 (duplicate value in the same command skipped)", res.N)
	}
	al = h.f.Allowlist("l1")
	if len(al.Items) != 2 || al.UpdatedAt != T0+sec || al.CreatedAt != T0 {
		t.Fatalf("allowlist after add = %+v", al)
	}
	if it := al.Items[0]; it.Value != "192.168.1.0/24" || it.Comment != "lan" || it.CreatedAt != T0+sec || it.Range != mustRange(t, "192.168.1.0/24") {
		t.Errorf("item 0 = %+v", it)
	}
	if res := h.must(CmdAllowlistAdd, T0+2*sec, AllowlistAdd{Name: "l1", Items: []AllowlistItem{{Value: "2001:db8::/32"}, {Value: "8.8.8.8"}}}); res.N != 1 {
		t.Errorf("re-add N = %d, want 1", res.N)
	}
	before := h.f.Allowlist("l1")
	res = h.apply(CmdAllowlistAdd, T0+3*sec, AllowlistAdd{Name: "l1", Items: []AllowlistItem{{Value: "9.9.9.9"}, {Value: "bogus"}}})
	if res.Err() == nil || !strings.Contains(res.Err().Error(), "invalid ip address 'bogus'") {
		t.Errorf("invalid item: err = %v", res.Err())
	}
	if after := h.f.Allowlist("l1"); after != before || len(after.Items) != 3 {
		t.Errorf("failed add changed the list: %+v", after)
	}

	reasons, err := h.f.AllowlistCheck("192.168.1.7", at(T0))
	if err != nil || len(reasons) != 1 || reasons[0] != "192.168.1.0/24 from l1 (lan)" {
		t.Errorf("check = %v, %v", reasons, err)
	}
	if reasons, _ := h.f.AllowlistCheck("192.168.0.0/16", at(T0)); len(reasons) != 1 {
		t.Errorf("two-directional check = %v", reasons)
	}
	if _, err := h.f.AllowlistCheck("nope", at(T0)); err == nil {
		t.Error("check of invalid value: no error")
	}

	res = h.must(CmdAllowlistRemove, T0+4*sec, AllowlistRemove{Name: "l1", Values: []string{"8.8.8.8", "192.168.1.0/24", "1.2.3.4"}})
	if res.N != 2 {
		t.Errorf("remove N = %d, want 2", res.N)
	}
	if al := h.f.Allowlist("l1"); len(al.Items) != 1 || al.Items[0].Value != "2001:db8::/32" || al.UpdatedAt != T0+4*sec {
		t.Errorf("after remove = %+v", al)
	}
	if len(before.Items) != 3 {
		t.Error("remove mutated the previous record in place")
	}
	if res := h.apply(CmdAllowlistRemove, T0, AllowlistRemove{Name: "nope"}); res.Err() == nil {
		t.Error("remove from unknown list: no error")
	}
	if res := h.must(CmdAllowlistDelete, T0, AllowlistDelete{Name: "l1"}); res.N != 1 || h.f.Allowlist("l1") != nil {
		t.Errorf("delete: N=%d list=%v", res.N, h.f.Allowlist("l1"))
	}
	if res := h.apply(CmdAllowlistDelete, T0, AllowlistDelete{Name: "l1"}); res.Err() == nil || !strings.Contains(res.Err().Error(), "not found") {
		t.Errorf("delete unknown: %v", res.Err())
	}
}

func TestAllowlistAddRefusesConsoleManaged(t *testing.T) {
	h := newHarness(t)
	h.must(CmdAllowlistReplace, T0, AllowlistReplace{Name: "console", AllowlistID: "c1"})
	res := h.apply(CmdAllowlistAdd, T0, AllowlistAdd{Name: "console", Items: []AllowlistItem{{Value: "1.1.1.1"}}})
	if res.Err() == nil || !strings.Contains(res.Err().Error(), "managed by the console") {
		t.Errorf("add to console list: %v", res.Err())
	}
	if len(h.f.Allowlist("console").Items) != 0 {
		t.Error("items added to a console-managed list")
	}
}

func TestAllowlistAddExpiresCoveredAndCoveringDecisions(t *testing.T) {
	h := newHarness(t)
	h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l"})
	inside := h.dec(T0, ban("10.1.2.3", T0+hour))                         // covered by the item
	exact := h.dec(T0, withType(ban("10.1.2.0/24", T0+hour), "captcha"))  // equal to the item
	covering := h.dec(T0, withScope(ban("10.0.0.0/8", T0+hour), "Range")) // covers the item
	sim := h.simDec(T0, ban("10.1.2.4", T0+hour))                         // simulated too
	outside := h.dec(T0, ban("10.1.3.1", T0+hour))                        // unrelated
	v6 := h.dec(T0, ban("::ffff:a01:203", T0+hour))                       // mapped = 10.1.2.3: IPv4
	realV6 := h.dec(T0, ban("2001:db8::1", T0+hour))                      // other family
	country := h.dec(T0, withScope(ban("10.1.2.5", T0+hour), "Country"))  // not an IP scope
	expired := h.dec(T0, ban("10.1.2.6", T0+sec))                         // already expired
	handExpired := h.dec(T0, ban("10.1.2.7", T0+hour))                    // expired by hand earlier
	h.expire(T0+2*sec, handExpired)
	_, _, cursor := h.f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(T0+3*sec))

	ts := T0 + mins
	res := h.must(CmdAllowlistAdd, ts, AllowlistAdd{Name: "l", Items: []AllowlistItem{{Value: "10.1.2.0/24"}}})
	idx := h.idx
	if res.N != 1 {
		t.Errorf("add N = %d", res.N)
	}
	for _, id := range []int64{inside, exact, covering, sim, v6} {
		d := h.f.Decision(id)
		if d.Until != ts || d.DeletedIndex != idx {
			t.Errorf("decision %s (%d) not expired by the allowlist: until=%d di=%d", d.Value, id, d.Until, d.DeletedIndex)
		}
	}
	for _, id := range []int64{outside, realV6, country} {
		if d := h.f.Decision(id); d.Until != T0+hour || d.DeletedIndex != 0 {
			t.Errorf("unrelated decision %s changed: %+v", d.Value, d)
		}
	}
	if d := h.f.Decision(expired); d.Until != T0+sec || d.DeletedIndex != 0 {
		t.Errorf("already expired decision touched: %+v", d)
	}
	if d := h.f.Decision(handExpired); d.Until != T0+2*sec || d.DeletedIndex != idx-1 {
		t.Errorf("hand-expired decision touched again: %+v", d)
	}
	// the expired ones reach stream bouncers as deleted
	_, deleted, _ := h.f.Stream(&DecisionFilter{Scopes: []string{"Ip", "Range"}, IncludeSimulated: true},
		StreamCursor{Index: cursor, LastPull: T0 + 5*sec}, false, at(ts+sec))
	checkIDs(t, "delta deleted", deleted, inside, exact, covering, sim, v6)

	// a second list item that covers nothing active changes nothing
	h.must(CmdAllowlistAdd, ts+sec, AllowlistAdd{Name: "l", Items: []AllowlistItem{{Value: "172.16.0.0/12"}}})
	if d := h.f.Decision(outside); d.DeletedIndex != 0 {
		t.Error("unrelated decision expired by an unrelated item")
	}
	// an IPv6 item expires IPv6 decisions only
	h.must(CmdAllowlistAdd, ts+2*sec, AllowlistAdd{Name: "l", Items: []AllowlistItem{{Value: "2001:db8::/64"}}})
	if d := h.f.Decision(realV6); d.Until != ts+2*sec {
		t.Errorf("IPv6 decision not expired by IPv6 item: %+v", d)
	}
	if d := h.f.Decision(outside); d.DeletedIndex != 0 {
		t.Error("IPv4 decision expired by IPv6 item")
	}
}

// lapi.md §4.14: only *active* items (no expiry or expiry >= now) expire
// decisions. An item that is already expired when it is added must not.
func TestAllowlistAddExpiredItemDoesNotExpireDecisions(t *testing.T) {
	h := newHarness(t)
	h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l"})
	id := h.dec(T0, ban("10.1.2.3", T0+hour))
	h.must(CmdAllowlistAdd, T0+mins, AllowlistAdd{Name: "l", Items: []AllowlistItem{{Value: "10.1.2.0/24", Expiration: T0 + sec}}})
	if d := h.f.Decision(id); d.Until != T0+hour || d.DeletedIndex != 0 {
		t.Errorf("decision expired by an allowlist item that was already expired: until=%d (want %d) deleted_index=%d",
			d.Until, T0+hour, d.DeletedIndex)
	}
}

func TestTouchMovesForwardOnly(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m"}})
	h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "b"}})
	m0, b0 := h.f.Machine("m"), h.f.Bouncer("b")

	res := h.must(CmdTouch, T0, Touch{
		Machines: []MachineTouch{{ID: "m", LastHeartbeat: 100}, {ID: "ghost", LastHeartbeat: 100}},
		Bouncers: []BouncerTouch{{Name: "b", LastPull: 200, Cursor: 10}, {Name: "ghost", LastPull: 5}}})
	if res.N != 2 {
		t.Errorf("touch N = %d, want 2", res.N)
	}
	if m := h.f.Machine("m"); m.LastHeartbeat != 100 || m.UpdatedAt != m0.UpdatedAt {
		t.Errorf("machine = %+v", m)
	}
	if b := h.f.Bouncer("b"); b.LastPull != 200 || b.Cursor != 10 || b.UpdatedAt != b0.UpdatedAt {
		t.Errorf("bouncer = %+v", b)
	}
	if h.f.Machine("ghost") != nil || h.f.Bouncer("ghost") != nil {
		t.Error("touch created records")
	}
	if m0.LastHeartbeat != 0 || b0.LastPull != 0 {
		t.Error("touch mutated previous records in place")
	}

	// older values: no change
	res = h.must(CmdTouch, T0, Touch{Machines: []MachineTouch{{ID: "m", LastHeartbeat: 50}},
		Bouncers: []BouncerTouch{{Name: "b", LastPull: 150, Cursor: 9}}})
	if res.N != 0 {
		t.Errorf("backwards touch N = %d", res.N)
	}
	if m := h.f.Machine("m"); m.LastHeartbeat != 100 {
		t.Errorf("heartbeat moved back to %d", m.LastHeartbeat)
	}
	if b := h.f.Bouncer("b"); b.LastPull != 200 || b.Cursor != 10 {
		t.Errorf("bouncer moved back: %+v", b)
	}
	// each bouncer field moves independently
	h.must(CmdTouch, T0, Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: 300, Cursor: 5}}})
	if b := h.f.Bouncer("b"); b.LastPull != 300 || b.Cursor != 10 {
		t.Errorf("last_pull forward, cursor back: %+v", b)
	}
	h.must(CmdTouch, T0, Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: 1, Cursor: 20}}})
	if b := h.f.Bouncer("b"); b.LastPull != 300 || b.Cursor != 20 {
		t.Errorf("cursor forward, last_pull back: %+v", b)
	}
}

func TestUnknownCommandTypes(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m"}})

	// an ignorable type this node does not know is skipped
	ign := entry(t, CmdTouch, T0, Touch{})
	ign[1] = byte(IgnorableFlag | 0x33)
	out := h.raw(ign)
	res, ok := out.(*Result)
	if !ok || res == nil || res.Err() == nil {
		t.Fatalf("unknown ignorable: got %v, want a Result with an error", out)
	}
	if got := h.f.AppliedIndex(); got != h.idx {
		t.Errorf("applied index = %d, want %d", got, h.idx)
	}
	// a known ignorable type with an undecodable body is skipped too
	bad := entry(t, CmdTouch, T0, Touch{})
	bad = append(bad[:10], []byte("{not json")...)
	if res, _ := h.raw(bad).(*Result); res == nil || res.Err() == nil {
		t.Errorf("corrupt touch: %v", res)
	}
	// state untouched, FSM still works
	if m := h.f.Machine("m"); m == nil {
		t.Fatal("machine lost")
	}
	h.must(CmdMachineDelete, T0, MachineDelete{IDs: []string{"m"}})

	mustPanic := func(name string, data []byte) {
		t.Helper()
		defer func() {
			if r := recover(); r == nil {
				t.Errorf("%s: no panic", name)
			} else if !strings.Contains(r.(string), "cannot apply log entry") {
				t.Errorf("%s: panic %v", name, r)
			}
		}()
		h.raw(data)
	}
	unk := entry(t, CmdMachineCreate, T0, MachineCreate{})
	unk[1] = 0x55
	mustPanic("unknown type", unk)
	ver := entry(t, CmdMachineCreate, T0, MachineCreate{})
	ver[0] = 3
	mustPanic("newer format version", ver)

	// malformed entries of a known type are skipped with an invalid result
	mustSkip := func(name string, data []byte) {
		t.Helper()
		before := h.f.Machines()
		res, _ := h.raw(data).(*Result)
		if res == nil || res.Code != CodeInvalid {
			t.Errorf("%s: result %+v, want CodeInvalid", name, res)
		}
		if got := h.f.AppliedIndex(); got != h.idx {
			t.Errorf("%s: applied index = %d, want %d", name, got, h.idx)
		}
		if len(h.f.Machines()) != len(before) {
			t.Errorf("%s: state changed", name)
		}
	}
	v2bad := entry(t, CmdMachineCreate, T0, MachineCreate{})
	v2bad[0] = 2 // the JSON's '{' is read as a 123-byte request ID
	mustSkip("v2 entry with a short ID", v2bad)
	mustSkip("short entry", []byte{1, 2, 3})
	mustSkip("empty entry", nil)
	mustSkip("format 0", append([]byte{0}, entry(t, CmdMachineCreate, T0, MachineCreate{})[1:]...))
	corrupt := entry(t, CmdAlertsCreate, T0, AlertsCreate{})
	corrupt = append(corrupt[:10], '[')
	mustSkip("corrupt body", corrupt)
	wrongShape := append(entry(t, CmdMachineDelete, T0, MachineDelete{})[:10], []byte(`{"ids":"m"}`)...)
	mustSkip("body of the wrong shape", wrongShape)
	// and the FSM still applies what follows
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "after"}})
	if h.f.Machine("after") == nil {
		t.Fatal("FSM stopped applying after a skipped entry")
	}
}

func TestEncodeDecodeStampTime(t *testing.T) {
	body := AlertsCreate{MachineID: "m", Alerts: []NewAlert{{Alert: Alert{Scenario: "s"}, Decisions: []Decision{ban("1.2.3.4", 9)}}}}
	data, err := Command{Type: CmdAlertsCreate, Time: 123, Body: body}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != formatV1 || CmdType(data[1]) != CmdAlertsCreate {
		t.Errorf("header = %v", data[:2])
	}
	StampTime(data, T0)
	c, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if c.Type != CmdAlertsCreate || c.Time != T0 {
		t.Errorf("decoded type %d time %d", c.Type, c.Time)
	}
	got, ok := c.Body.(*AlertsCreate)
	if !ok || got.MachineID != "m" || len(got.Alerts) != 1 || got.Alerts[0].Decisions[0].Value != "1.2.3.4" || got.Alerts[0].Decisions[0].Until != 9 {
		t.Errorf("decoded body = %#v", c.Body)
	}
	short := []byte{1, 2}
	StampTime(short, 5) // must not panic
	if !bytes.Equal(short, []byte{1, 2}) {
		t.Error("StampTime changed a short entry")
	}
	for typ := CmdSetJWTKey; typ <= CmdAllowlistRemove; typ++ {
		if commands.lookup(typ) == nil {
			t.Errorf("command %d not registered", typ)
		}
	}
	if commands.lookup(CmdTouch) == nil {
		t.Error("touch not registered")
	}
}

// A command carrying a request ID is applied once: a retry (lost answer,
// leader change) gets the first result back, also after a snapshot.
func TestIdempotentCommands(t *testing.T) {
	h := newHarness(t)
	body := AlertsCreate{MachineID: "m", Alerts: []NewAlert{{Alert: Alert{Scenario: "s"}, Decisions: []Decision{ban("1.2.3.4", 9)}}}}
	data, err := Command{Type: CmdAlertsCreate, Time: T0, ID: "req-1", Body: body}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if data[0] != formatV2 {
		t.Fatalf("format %d, want %d", data[0], formatV2)
	}
	c, err := Decode(data)
	if err != nil || c.ID != "req-1" || c.Type != CmdAlertsCreate {
		t.Fatalf("decode: %+v %v", c, err)
	}
	first := h.raw(data).(*Result)
	again := h.raw(data).(*Result)
	if len(first.IDs) != 1 || len(again.IDs) != 1 || first.IDs[0] != again.IDs[0] {
		t.Fatalf("retry applied again: first %v, retry %v", first.IDs, again.IDs)
	}
	if n := len(h.f.Alerts(&AlertFilter{}, time.Unix(0, T0))); n != 1 {
		t.Fatalf("%d alerts, want 1", n)
	}
	// the memory survives a snapshot
	g := roundTrip(t, h.f)
	gh := &harness{t: t, f: g, idx: h.idx}
	if r := gh.raw(data).(*Result); r.IDs[0] != first.IDs[0] {
		t.Fatalf("after restore the retry was applied again: %v", r.IDs)
	}
	// without an ID, the same command is applied twice
	plain, _ := Command{Type: CmdAlertsCreate, Time: T0, Body: body}.Encode()
	a, b := h.raw(plain).(*Result), h.raw(plain).(*Result)
	if a.IDs[0] == b.IDs[0] {
		t.Fatal("commands without an ID must not be deduplicated")
	}
}

// The node that served a bouncer's last pull follows the newest pull only,
// and a touch naming a node longer than a name is refused.
func TestTouchRecordsTheNodeOfTheLastPull(t *testing.T) {
	h := newHarness(t)
	h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "b"}})
	h.must(CmdTouch, T0, Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: 200, Node: "n2"}}})
	if b := h.f.Bouncer("b"); b.LastPullNode != "n2" {
		t.Fatalf("last pull node = %q, want n2", b.LastPullNode)
	}
	// an older pull relayed late by another node does not move it
	h.must(CmdTouch, T0, Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: 150, Cursor: 9, Node: "n3"}}})
	if b := h.f.Bouncer("b"); b.LastPullNode != "n2" || b.Cursor != 9 {
		t.Fatalf("after an older pull: %+v", b)
	}
	// a newer pull moves it
	h.must(CmdTouch, T0, Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: 300, Node: "n3"}}})
	if b := h.f.Bouncer("b"); b.LastPullNode != "n3" {
		t.Fatalf("last pull node = %q, want n3", b.LastPullNode)
	}
	// a newer pull of unknown node (an older relayer) clears it
	h.must(CmdTouch, T0, Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: 400}}})
	if b := h.f.Bouncer("b"); b.LastPullNode != "" {
		t.Fatalf("last pull node = %q after a pull of unknown node", b.LastPullNode)
	}
	if err := (Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: 1, Node: strings.Repeat("n", MaxName+1)}}}).Validate(); err == nil {
		t.Fatal("an oversized node name was accepted")
	}
}
