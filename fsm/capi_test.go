package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// Commands used by the CAPI loops (capi.md §5).

func capiBan(value string, until int64) Decision {
	return Decision{Origin: "CAPI", Type: "ban", Scope: "Ip", Value: value, Scenario: "crowdsecurity/ssh-bf", Until: until}
}

func listBan(list, value string, until int64) Decision {
	return Decision{Origin: "lists", Type: "ban", Scope: "Ip", Value: value, Scenario: list, Until: until}
}

func pullAlert(scope string) Alert {
	return Alert{Scenario: "update : +2/-0 IPs", Source: Source{Scope: scope}, Remediation: true, StartAt: T0, StopAt: T0,
		MachineID: "spoofed", ID: 77, DecisionIDs: []int64{5}}
}

func (h *harness) imp(ts int64, alertID int64, a Alert, ds ...Decision) *Result {
	h.t.Helper()
	return h.apply(CmdImportDecisions, ts, ImportDecisions{AlertID: alertID, Alert: a, Decisions: ds})
}

func TestSetConfig(t *testing.T) {
	h := newHarness(t)
	if v := h.f.Config("capi:token"); v != nil {
		t.Fatalf("unset key = %q", v)
	}
	h.must(CmdSetConfig, T0, SetConfig{Key: "capi:token", Value: []byte("t1")})
	h.must(CmdSetConfig, T0, SetConfig{Key: "blocklist:firehol:last_pull", Value: []byte("Wed, 01 Jan 2025 00:00:00 GMT")})
	h.must(CmdSetConfig, T0, SetConfig{Key: "capi:token", Value: []byte("t2")})
	if v := h.f.Config("capi:token"); string(v) != "t2" {
		t.Errorf("overwritten key = %q", v)
	}
	r := roundTrip(t, h.f)
	if v := r.Config("blocklist:firehol:last_pull"); string(v) != "Wed, 01 Jan 2025 00:00:00 GMT" {
		t.Errorf("restored config = %q", v)
	}
	if v := r.Config("capi:token"); string(v) != "t2" {
		t.Errorf("restored token = %q", v)
	}
	h.must(CmdSetConfig, T0, SetConfig{Key: "capi:token"}) // nil value deletes
	if v := h.f.Config("capi:token"); v != nil {
		t.Errorf("deleted key = %q", v)
	}
	if v := r.Config("capi:token"); string(v) != "t2" {
		t.Error("a restored FSM shares config with its source")
	}

	// a snapshot written before config existed restores to an empty,
	// usable config
	old := `{"meta":{"version":1,"next_alert_id":3,"next_decision_id":4,"last_index":9}}` + "\n"
	f := New(quietLogger())
	if err := f.Restore(io.NopCloser(bytes.NewReader([]byte(old)))); err != nil {
		t.Fatal(err)
	}
	if v := f.Config("x"); v != nil {
		t.Errorf("config after old snapshot = %q", v)
	}
	data := entry(t, CmdSetConfig, T0, SetConfig{Key: "k", Value: []byte("v")})
	if res := f.Apply(rawLog(10, data)).(*Result); res.Err() != nil || string(f.Config("k")) != "v" {
		t.Errorf("SetConfig after restoring an old snapshot: %+v, %q", res, f.Config("k"))
	}
}

func TestImportDecisionsNewAlertAndChunks(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "spoofed"}})
	prevAlert := h.dec(T0, ban("9.9.9.9", T0+hour)) // alert 1, decision 1
	ts := T0 + sec
	res := h.imp(ts, 0, pullAlert("crowdsecurity/community-blocklist"),
		capiBan("1.1.1.1", ts+2*hour), capiBan("bogus", ts+2*hour), withScope(capiBan("2001:db8::/64", ts+2*hour), "Range"))
	if res.Err() != nil {
		t.Fatal(res.Err())
	}
	idx := h.idx
	if !equalIDs(res.IDs, []int64{2}) || res.N != 2 {
		t.Fatalf("import result = %+v, want alert [2] and 2 decisions", res)
	}
	a := h.f.Alert(2)
	if a == nil || a.MachineID != "" || a.CreatedAt != ts || a.Source.Scope != "crowdsecurity/community-blocklist" || !a.Remediation {
		t.Fatalf("pull alert = %+v", a)
	}
	if !equalIDs(a.DecisionIDs, []int64{2, 3}) {
		t.Errorf("decision IDs = %v, want [2 3]", a.DecisionIDs)
	}
	for _, id := range a.DecisionIDs {
		d := h.f.Decision(id)
		if d.AlertID != 2 || d.CreatedAt != ts || d.CreatedIndex != idx || d.DeletedIndex != 0 || !d.Range.Valid() {
			t.Errorf("imported decision = %+v", d)
		}
	}
	if n, _, _ := h.f.Counts(at(ts)); n != 2 {
		t.Errorf("alert count = %d, want 2", n)
	}
	if h.f.Machine("spoofed").LastPush != 0 {
		t.Error("an import moved a machine's last_push")
	}

	// a later chunk of the same pull attaches to the alert
	res = h.imp(ts+sec, 2, Alert{Scenario: "ignored"}, capiBan("1.1.1.2", ts+2*hour))
	if res.Err() != nil || !equalIDs(res.IDs, []int64{2}) || res.N != 1 {
		t.Fatalf("chunk result = %+v", res)
	}
	a2 := h.f.Alert(2)
	if !equalIDs(a2.DecisionIDs, []int64{2, 3, 4}) || a2.Scenario != a.Scenario || a2.CreatedAt != ts {
		t.Errorf("alert after chunk = %+v", a2)
	}
	if !equalIDs(a.DecisionIDs, []int64{2, 3}) {
		t.Error("chunk mutated the previous alert record in place")
	}
	if n, _, _ := h.f.Counts(at(ts)); n != 2 {
		t.Errorf("alert count after chunk = %d, want 2", n)
	}
	// ... and it is a live decision like the others
	checkIDs(t, "chunk decision", h.f.Decisions(&DecisionFilter{IP: rangeOf(t, "1.1.1.2"), Contains: true}, at(ts)), 4)

	// unknown alert: error, nothing stored, no ID used
	res = h.imp(ts, 999, Alert{}, capiBan("1.1.1.3", ts+hour))
	if !errors.Is(res.Err(), ErrNotFound) {
		t.Errorf("import into unknown alert: %v", res.Err())
	}
	if got := h.f.Decisions(&DecisionFilter{Value: "1.1.1.3"}, at(ts)); len(got) != 0 {
		t.Error("decision stored for an unknown alert")
	}
	res = h.imp(ts, 0, pullAlert("lists:x"), listBan("x", "5.5.5.5", ts+hour))
	if !equalIDs(res.IDs, []int64{3}) || !equalIDs(h.f.Alert(3).DecisionIDs, []int64{5}) {
		t.Errorf("next import after a failed one: %+v / %+v", res, h.f.Alert(3))
	}
	if h.f.Decision(prevAlert) == nil {
		t.Error("unrelated decision lost")
	}
	checkIndexInvariants(t, h.f)
}

func TestImportDecisionsReplacesSameOriginByValue(t *testing.T) {
	h := newHarness(t)
	flt := &DecisionFilter{Scopes: ipScopes}
	ts := T0
	res := h.imp(ts, 0, pullAlert("crowdsecurity/community-blocklist"),
		capiBan("1.1.1.1", ts+2*hour), capiBan("2.2.2.2", ts+2*hour), capiBan("3.3.3.3", ts+2*hour))
	first := res.IDs[0]
	oldIDs := h.f.Alert(first).DecisionIDs
	local := h.dec(ts, withOrigin(ban("1.1.1.1", ts+hour), "crowdsec"))            // other origin: kept
	list := h.imp(ts, 0, pullAlert("lists:fh"), listBan("fh", "2.2.2.2", ts+hour)) // other origin: kept
	listDec := h.f.Alert(list.IDs[0]).DecisionIDs[0]
	_, _, cursor := h.f.Stream(flt, StreamCursor{}, true, at(ts))

	// the next pull has 1.1.1.1 again (ban) and 3.3.3.3 as captcha
	ts2 := ts + 2*mins
	res = h.imp(ts2, 0, pullAlert("crowdsecurity/community-blocklist"),
		capiBan("1.1.1.1", ts2+2*hour), withType(capiBan("3.3.3.3", ts2+2*hour), "captcha"))
	second := res.IDs[0]
	newIDs := h.f.Alert(second).DecisionIDs
	if len(newIDs) != 2 {
		t.Fatalf("second import stored %v", newIDs)
	}
	if h.f.Decision(oldIDs[0]) != nil || h.f.Decision(oldIDs[2]) != nil {
		t.Error("same-origin decisions with a re-pulled value not hard-deleted")
	}
	if h.f.Decision(oldIDs[1]) == nil {
		t.Error("value absent from the new batch was removed")
	}
	if got := h.f.Alert(first).DecisionIDs; !equalIDs(got, []int64{oldIDs[1]}) {
		t.Errorf("first pull alert decisions = %v, want [%d]", got, oldIDs[1])
	}
	if h.f.Decision(local) == nil || h.f.Decision(listDec) == nil {
		t.Error("decisions of another origin replaced")
	}
	checkIndexInvariants(t, h.f)

	// a bouncer sees the replacements as new; the replaced ban of 3.3.3.3
	// (now a captcha) is reported deleted, the replaced 1.1.1.1 ban is not
	// (the new one supersedes it)
	newD, deleted, _ := h.f.Stream(flt, StreamCursor{Index: cursor, LastPull: ts}, false, at(ts2+sec))
	checkIDs(t, "delta new", newD, newIDs...)
	checkIDs(t, "delta deleted", deleted, oldIDs[2])

	// replacing is by value only: a blocklist re-pull of 2.2.2.2 replaces the
	// list decision, not the CAPI one
	h.imp(ts2, 0, pullAlert("lists:other"), listBan("other", "2.2.2.2", ts2+hour))
	if h.f.Decision(listDec) != nil || h.f.Decision(oldIDs[1]) == nil {
		t.Error("list re-pull: wrong decision replaced")
	}
	checkIndexInvariants(t, h.f)
}

func TestExpireByValue(t *testing.T) {
	h := newHarness(t)
	ts := T0
	ip := h.dec(ts, capiBan("1.2.3.4", ts+hour))
	rangeScoped := h.dec(ts, withScope(capiBan("1.2.3.4", ts+hour), "Range"))
	cidr := h.dec(ts, withScope(capiBan("10.0.0.0/8", ts+hour), "Range"))
	cidr2 := h.dec(ts, withScope(capiBan("10.1.0.0/16", ts+hour), "Range"))
	list := h.dec(ts, listBan("fh", "1.2.3.4", ts+hour))
	local := h.dec(ts, ban("1.2.3.4", ts+hour))
	expired := h.dec(ts, capiBan("5.5.5.5", ts-hour))
	country := h.dec(ts, withScope(capiBan("FR", ts+hour), "Country"))
	_, _, cursor := h.f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(ts))

	ts2 := ts + mins
	res := h.must(CmdExpireByValue, ts2, ExpireByValue{Origin: "CAPI", Items: []ValueRef{
		{Scope: "ip", Value: "1.2.3.4"},        // ip: any stored scope
		{Scope: "Range", Value: "10.0.0.0/8"},  // exact scope
		{Scope: "range", Value: "10.1.0.0/16"}, // "range" != "Range": untouched
		{Scope: "Ip", Value: "5.5.5.5"},        // already expired: untouched
		{Scope: "Country", Value: "DE"},        // nothing
	}})
	idx := h.idx
	if res.N != 3 {
		t.Errorf("N = %d, want 3", res.N)
	}
	for _, id := range []int64{ip, rangeScoped, cidr} {
		if d := h.f.Decision(id); d.Until != ts2 || d.DeletedIndex != idx {
			t.Errorf("decision %d %s/%s not expired: %+v", id, d.Scope, d.Value, d)
		}
	}
	for _, id := range []int64{cidr2, list, local, country} {
		if d := h.f.Decision(id); d.Until != ts+hour || d.DeletedIndex != 0 {
			t.Errorf("decision %d %s/%s/%s expired: %+v", id, d.Origin, d.Scope, d.Value, d)
		}
	}
	if d := h.f.Decision(expired); d.Until != ts-hour || d.DeletedIndex != 0 {
		t.Errorf("expired decision touched: %+v", d)
	}
	// CAPI deletions reach bouncers (the ip one is hidden by the longer-lived
	// local decision with the same value, type and scope: dedup)
	_, deleted, _ := h.f.Stream(&DecisionFilter{}, StreamCursor{Index: cursor, LastPull: ts}, false, at(ts2+sec))
	checkIDs(t, "delta deleted", deleted, rangeScoped, cidr)
	checkIndexInvariants(t, h.f)
}

func TestExpireSet(t *testing.T) {
	h := newHarness(t)
	ts := T0
	r1 := h.imp(ts, 0, pullAlert("lists:fh"), listBan("fh", "1.1.1.1", ts+hour), listBan("fh", "1.1.1.2", ts+hour),
		listBan("fh", "1.1.1.9", ts-hour))
	old := h.f.Alert(r1.IDs[0]).DecisionIDs
	r2 := h.imp(ts+mins, 0, pullAlert("lists:fh"), listBan("fh", "1.1.1.2", ts+2*hour), listBan("fh", "1.1.1.3", ts+2*hour))
	keep := h.f.Alert(r2.IDs[0]).DecisionIDs
	other := h.dec(ts, listBan("other", "1.1.1.1", ts+hour))
	sameScenario := h.dec(ts, withOrigin(listBan("fh", "4.4.4.4", ts+hour), "crowdsec"))
	// 1.1.1.2 of the first pull was replaced by the second one
	if h.f.Decision(old[1]) != nil {
		t.Fatal("replace by value did not happen")
	}

	ts2 := ts + 2*mins
	res := h.must(CmdExpireSet, ts2, ExpireSet{Origin: "lists", Scenario: "fh", KeepAlertID: r2.IDs[0]})
	if res.N != 1 {
		t.Errorf("N = %d, want 1", res.N)
	}
	if d := h.f.Decision(old[0]); d.Until != ts2 || d.DeletedIndex != h.idx {
		t.Errorf("dropped value not expired: %+v", d)
	}
	if d := h.f.Decision(old[2]); d.Until != ts-hour || d.DeletedIndex != 0 {
		t.Errorf("already expired decision touched: %+v", d)
	}
	for _, id := range append([]int64{other, sameScenario}, keep...) {
		if d := h.f.Decision(id); d.DeletedIndex != 0 {
			t.Errorf("decision %d (%s/%s on alert %d) expired", id, d.Origin, d.Scenario, d.AlertID)
		}
	}
	checkIndexInvariants(t, h.f)
}

func TestAllowlistReplace(t *testing.T) {
	h := newHarness(t)
	inside := h.dec(T0, ban("10.1.2.3", T0+hour))
	covering := h.dec(T0, withScope(ban("10.0.0.0/8", T0+hour), "Range"))
	byExpired := h.dec(T0, ban("172.16.0.1", T0+hour))
	outside := h.dec(T0, ban("10.2.0.1", T0+hour))

	ts := T0 + mins
	res := h.must(CmdAllowlistReplace, ts, AllowlistReplace{Name: "console-a", Description: "d", AllowlistID: "id-1",
		Items: []AllowlistItem{{Value: "10.1.2.0/24", Comment: "c"}, {Value: "nope"},
			{Value: "172.16.0.0/12", Expiration: T0}, {Value: "192.0.2.1", CreatedAt: 5}}})
	idx := h.idx
	if res.N != 3 {
		t.Errorf("N = %d, want 3 stored items", res.N)
	}
	al := h.f.Allowlist("console-a")
	if al == nil || !al.ConsoleManaged || al.AllowlistID != "id-1" || al.Description != "d" || al.CreatedAt != ts || al.UpdatedAt != ts {
		t.Fatalf("console allowlist = %+v", al)
	}
	if len(al.Items) != 3 || al.Items[0].CreatedAt != ts || al.Items[2].CreatedAt != 5 || al.Items[0].Range != mustRange(t, "10.1.2.0/24") {
		t.Errorf("items = %+v", al.Items)
	}
	for _, id := range []int64{inside, covering} {
		if d := h.f.Decision(id); d.Until != ts || d.DeletedIndex != idx {
			t.Errorf("decision %s not expired: %+v", d.Value, d)
		}
	}
	for _, id := range []int64{byExpired, outside} {
		if d := h.f.Decision(id); d.DeletedIndex != 0 {
			t.Errorf("decision %s expired (expired item or unrelated)", d.Value)
		}
	}
	// console lists refuse local edits
	if res := h.apply(CmdAllowlistAdd, ts, AllowlistAdd{Name: "console-a", Items: []AllowlistItem{{Value: "1.1.1.1"}}}); res.Err() == nil {
		t.Error("AllowlistAdd to a console-managed list succeeded")
	}

	// found by ID: renamed, items replaced exactly, creation time kept
	ts2 := ts + mins
	h.must(CmdAllowlistReplace, ts2, AllowlistReplace{Name: "console-b", AllowlistID: "id-1", Items: []AllowlistItem{{Value: "10.2.0.0/16"}}})
	if h.f.Allowlist("console-a") != nil {
		t.Error("old name kept after a rename")
	}
	b := h.f.Allowlist("console-b")
	if b == nil || b.CreatedAt != ts || b.UpdatedAt != ts2 || b.Description != "" || len(b.Items) != 1 || b.Items[0].Value != "10.2.0.0/16" {
		t.Fatalf("replaced list = %+v", b)
	}
	if d := h.f.Decision(outside); d.Until != ts2 {
		t.Errorf("decision covered by the replacement item not expired: %+v", d)
	}
	if len(h.f.Allowlists()) != 1 {
		t.Errorf("allowlists = %v", h.f.Allowlists())
	}
	// found by name when the ID is new
	h.must(CmdAllowlistReplace, ts2+sec, AllowlistReplace{Name: "console-b", AllowlistID: "id-2"})
	if c := h.f.Allowlist("console-b"); c == nil || c.AllowlistID != "id-2" || c.CreatedAt != ts || len(c.Items) != 0 {
		t.Errorf("replace by name = %+v", c)
	}
	if reasons, _ := h.f.AllowlistCheck("10.2.0.1", at(ts2)); len(reasons) != 0 {
		t.Errorf("removed item still allowlists: %v", reasons)
	}
	// the console list survives a snapshot
	r := roundTrip(t, h.f)
	if c := r.Allowlist("console-b"); c == nil || !c.ConsoleManaged || c.AllowlistID != "id-2" {
		t.Errorf("restored console list = %+v", c)
	}
	checkIndexInvariants(t, h.f)
}

func TestAlertsAfterAndLastAlertID(t *testing.T) {
	h := newHarness(t)
	if h.f.LastAlertID() != 0 || len(h.f.AlertsAfter(0, 0)) != 0 {
		t.Fatal("empty FSM has alerts")
	}
	for i := 0; i < 5; i++ {
		h.alert(T0, "", Alert{})
	}
	h.deleteAlerts(T0, 3, 5)
	if got := h.f.LastAlertID(); got != 4 {
		t.Errorf("LastAlertID = %d, want 4", got)
	}
	ids := func(as []*Alert) []int64 {
		out := []int64{}
		for _, a := range as {
			out = append(out, a.ID)
		}
		return out
	}
	if got := ids(h.f.AlertsAfter(0, 0)); !equalIDs(got, []int64{1, 2, 4}) {
		t.Errorf("AlertsAfter(0, all) = %v", got)
	}
	if got := ids(h.f.AlertsAfter(1, 1)); !equalIDs(got, []int64{2}) {
		t.Errorf("AlertsAfter(1, 1) = %v", got)
	}
	if got := ids(h.f.AlertsAfter(2, 10)); !equalIDs(got, []int64{4}) {
		t.Errorf("AlertsAfter(2, 10) = %v", got)
	}
	if got := ids(h.f.AlertsAfter(4, 10)); len(got) != 0 {
		t.Errorf("AlertsAfter(4) = %v", got)
	}
}

// Result.N is the number of affected records: a value listed twice (CAPI
// may send the same value under "Ip" and "ip", or in two groups) expires
// one decision, which must be counted once (the reference's second update
// matches nothing because the decision is no longer active).
func TestExpireByValueCountsEachDecisionOnce(t *testing.T) {
	h := newHarness(t)
	id := h.dec(T0, capiBan("1.2.3.4", T0+hour))
	res := h.must(CmdExpireByValue, T0+sec, ExpireByValue{Origin: "CAPI", Items: []ValueRef{
		{Scope: "Ip", Value: "1.2.3.4"}, {Scope: "ip", Value: "1.2.3.4"}}})
	if res.N != 1 {
		t.Errorf("N = %d, want 1 (one decision expired)", res.N)
	}
	if d := h.f.Decision(id); d.Until != T0+sec {
		t.Errorf("decision not expired: %+v", d)
	}
}

func TestSetConfigIfAbsentIsFirstWriterWins(t *testing.T) {
	h := newHarness(t)
	r := h.apply(CmdSetConfig, 1, &SetConfig{Key: "pki:token:a", Value: []byte("n1"), IfAbsent: true})
	if r.N != 1 {
		t.Fatalf("first claim: N=%d", r.N)
	}
	r = h.apply(CmdSetConfig, 1, &SetConfig{Key: "pki:token:a", Value: []byte("n2"), IfAbsent: true})
	if r.N != 0 || string(h.f.Config("pki:token:a")) != "n1" {
		t.Fatalf("second claim must lose: N=%d value=%q", r.N, h.f.Config("pki:token:a"))
	}
	h.apply(CmdSetConfig, 1, &SetConfig{Key: "pki:cert:1", Value: []byte("x")})
	if got := h.f.ConfigPrefix("pki:token:"); len(got) != 1 || string(got["pki:token:a"]) != "n1" {
		t.Fatalf("prefix listing %v", got)
	}
}
