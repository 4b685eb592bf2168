package fsm

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

// exampleCommands are real commands of every registered type, in an order
// that builds a small state holding every kind of record
// (TestEveryCommandLeavesPublishedStateUnchanged fails when a registered
// type has none).
func exampleCommands() []Command {
	return []Command{
		{Type: CmdSetJWTKey, Body: SetJWTKey{Key: []byte("k")}},
		{Type: CmdMachineCreate, ID: "0123456789abcdef", Body: MachineCreate{Machine: Machine{ID: "m9", PasswordHash: []byte("h"), AuthType: AuthPassword}}},
		{Type: CmdMachineCreate, Body: MachineCreate{Machine: Machine{ID: "m1"}, Force: true}},
		{Type: CmdMachineUpdate, Body: MachineUpdate{ID: "m1", Validated: ptr(true), Scenarios: ptr("a/b"), HubState: []byte(`{"parsers":{}}`)}},
		{Type: CmdMachineDelete, Body: MachineDelete{IDs: []string{"m2", "nope"}}},
		{Type: CmdBouncerCreate, Body: BouncerCreate{Bouncer: Bouncer{Name: "fw@1.2.3.4", KeyHash: "h", AuthType: AuthAPIKey}}},
		{Type: CmdBouncerUpdate, Body: BouncerUpdate{Name: "b1", IP: ptr("1.2.3.4"), Type: ptr("cs-firewall-bouncer")}},
		{Type: CmdBouncerDelete, Body: BouncerDelete{Names: []string{"b2"}}},
		{Type: CmdAlertsCreate, Body: AlertsCreate{MachineID: "m1", Alerts: []NewAlert{{
			Alert:     Alert{Scenario: "crowdsecurity/ssh-bf", Source: Source{Scope: "Ip", Value: "1.2.3.4"}, Events: []Event{{Timestamp: T0, Meta: []KV{{Key: "k", Value: "v"}}}}},
			Decisions: []Decision{ban("1.2.3.4", T0+hour), withScope(ban("10.0.0.0/8", 1<<62), "Range"), withScope(ban("bob", T0+hour), "Username")}}}}},
		{Type: CmdAlertsDelete, Body: AlertsDelete{IDs: []int64{1, 99}, MustExist: true}},
		{Type: CmdAlertsDelete, Body: AlertsDelete{Filter: &AlertFilter{IP: rangePtr("1.2.3.0/24"), Contains: true, Scope: "Ip"}}},
		{Type: CmdDecisionsExpire, Body: DecisionsExpire{IDs: []int64{1}}},
		{Type: CmdDecisionsExpire, Body: DecisionsExpire{Filter: &DecisionFilter{IP: rangePtr("2001:db8::/32"), Scopes: []string{"Ip"}, Origins: []string{"crowdsec"}}}},
		{Type: CmdFlush, Body: Flush{MaxAge: 7 * 24 * hour, MaxItems: 1}},
		{Type: CmdAllowlistCreate, Body: AllowlistCreate{Name: "l9", Description: "d"}},
		{Type: CmdAllowlistDelete, Body: AllowlistDelete{Name: "l2"}},
		{Type: CmdAllowlistAdd, Body: AllowlistAdd{Name: "l1", Items: []AllowlistItem{{Value: "1.2.3.0/24", Expiration: T0 + hour}}}},
		{Type: CmdAllowlistRemove, Body: AllowlistRemove{Name: "l1", Values: []string{"192.168.0.0/16"}}},
		{Type: CmdSetConfig, Body: SetConfig{Key: "capi:token", Value: []byte("t"), IfAbsent: true}},
		{Type: CmdImportDecisions, Body: ImportDecisions{Alert: Alert{Scenario: "update : +2/-0 IPs"}, Decisions: []Decision{
			withOrigin(ban("5.5.5.5", T0+hour), "CAPI"), withOrigin(withScope(ban("5.5.0.0/16", T0+hour), "Range"), "CAPI")}}},
		{Type: CmdImportDecisions, Body: ImportDecisions{AlertID: 1, Decisions: []Decision{withOrigin(ban("5.5.5.5", T0+hour), "CAPI")}}},
		{Type: CmdImportList, Body: ImportList{Alert: Alert{Scenario: "update : +2/-0 IPs"}, Origin: "lists", Type: "ban", Scope: "Ip",
			Scenario: "l", Until: T0 + 2*hour, Seed: MustUUID("6f1c2a3b-4d5e-4f60-8172-000000000000"), Values: []string{"5.5.5.5", "10.0.0.0/8"}}},
		{Type: CmdImportList, Body: ImportList{AlertID: 1, Origin: "CAPI", Type: "ban", Scope: "Ip", Scenario: "s",
			Untils: []int64{T0 + hour}, Values: []string{"6.6.6.6"}}},
		{Type: CmdExpireByValue, Body: ExpireByValue{Origin: "CAPI", Items: []ValueRef{{Scope: "ip", Value: "5.5.5.5"}}}},
		{Type: CmdExpireSet, Body: ExpireSet{Origin: "lists", Scenario: "firehol", KeepAlertID: 3}},
		{Type: CmdAllowlistReplace, Body: AllowlistReplace{Name: "console", AllowlistID: "x", Items: []AllowlistItem{{Value: "1.2.3.4"}, {Value: "bogus"}}}},
		{Type: CmdTouch, Body: Touch{Machines: []MachineTouch{{ID: "m1", LastHeartbeat: T0}}, Bouncers: []BouncerTouch{{Name: "b1", LastPull: T0, Cursor: 3}}}},
		{Type: CmdUsageAdd, Body: UsageAdd{Kind: UsageLogProcessor, Name: "m1", Metrics: []byte(`[{"items":[]}]`)}},
		{Type: CmdUsageAdd, Body: UsageAdd{Kind: UsageRemediation, Name: "fw@1.2.3.4", Metrics: []byte(`[{"items":[]}]`)}},
		{Type: CmdUsageSent, Body: UsageSent{Marks: []UsageMark{{Kind: UsageLogProcessor, Name: "m1", UpTo: T0 + hour}}}},
		{Type: CmdUsageFlush, Body: UsageFlush{Before: T0 + hour}},
		{Type: CmdAutoDelete, Body: AutoDelete{AgentsPassword: sec, BouncersAPIKey: sec, AgentsCert: hour, BouncersCert: hour}},
		{Type: CmdNotifyCursor, Body: NotifyCursor{Name: "http_default", InFlight: 3}},
		{Type: CmdNotifyCursor, Body: NotifyCursor{Name: "http_default", Cursor: 3, Sent: 2, Batches: 1}},
		{Type: CmdProfilesSet, Body: ProfilesSet{YAML: []byte("name: p\nfilters: [\"true\"]\non_success: break\n"), Notifications: map[string][]byte{"http.yaml": []byte("type: http\nname: http_default\n")}, SetBy: "op@n1"}},
		{Type: CmdAuditAppend, Body: AuditAppend{Node: "n1", Who: "cert:alice", Action: "decision.add", Target: "1.2.3.4", Detail: "ban 4h: abuse"}},
	}
}

// fuzzSeedEntries are the example commands as log entries.
func fuzzSeedEntries(t testing.TB) [][]byte {
	var out [][]byte
	for _, c := range exampleCommands() {
		c.Time = T0 + hour
		data, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// FuzzDecodeApply: any bytes a log can hold. Decode and Validate never
// panic; Apply on an FSM with state never panics, except for the entries
// the version-skew rule says must stop the node; applying is deterministic.
func FuzzDecodeApply(f *testing.F) {
	seeds := fuzzSeedEntries(f)
	for _, e := range seeds {
		f.Add(e)
	}
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3})
	f.Add([]byte("\x02\x08\x00\x00\x00\x00\x00\x00\x00\x00\xffgarbage"))
	f.Add([]byte("\x01\x81\x00\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, decErr := Decode(data)
		if decErr == nil {
			_ = c.Validate()
		}
		_, vErr := DecodeValid(data)
		if decErr != nil && vErr == nil {
			t.Fatal("DecodeValid accepted what Decode refuses")
		}
		if vErr != nil && CodeOf(vErr) != CodeInvalid {
			t.Fatalf("DecodeValid error without the invalid code: %v", vErr)
		}
		apply := func() (res any, panicked string) {
			// a small state with every kind of record: the seeds applied
			h := newHarness(t)
			for _, e := range seeds {
				h.raw(e)
			}
			defer func() {
				if r := recover(); r != nil {
					panicked = fmt.Sprint(r)
				}
			}()
			res = h.raw(data)
			return res, ""
		}
		r1, p1 := apply()
		if p1 != "" {
			if decErr == nil || EntryKind(data) != EntryNewer || !strings.Contains(p1, "cannot apply log entry") {
				t.Fatalf("apply panicked: %s (decode err %v)", p1, decErr)
			}
			return
		}
		if decErr != nil && r1.(*Result).Code == CodeOK {
			t.Fatalf("undecodable entry applied with OK")
		}
		r2, _ := apply()
		if !reflect.DeepEqual(r1, r2) {
			t.Fatalf("apply is not deterministic: %+v vs %+v", r1, r2)
		}
	})
}

// FuzzRestore: snapshot bytes from a corrupted disk or a hostile peer
// (InstallSnapshot). Restore never panics; what it accepts survives
// another snapshot round trip unchanged.
func FuzzRestore(f *testing.F) {
	w := populate(f)
	f.Add(persist(f, mustSnapshot(f, w.h.f)))
	f.Add(persist(f, mustSnapshot(f, New(quietLogger()))))
	f.Add([]byte(`{"meta":{"version":1,"done":[{"id":"a","err":"object not found"}],"next_alert_id":1,"next_decision_id":1,"last_index":5}}` + "\n"))
	f.Add([]byte(`{"decision":{"id":1,"scope":"Range","value":"10.0.0.0/8","until":1}}` + "\n" + `{"tombstone":{"id":1,"scope":"Ip","value":"::1"}}`))
	f.Add([]byte(`{"meta":{"version":2}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fm := New(quietLogger())
		if err := fm.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			return
		}
		// queries over whatever was restored must not panic either
		now := at(T0)
		fm.Decisions(&DecisionFilter{}, now)
		fm.Stream(&DecisionFilter{}, StreamCursor{}, true, now)
		fm.Alerts(&AlertFilter{}, now)
		fm.Counts(now)
		_, _ = fm.AllowlistCheck("1.2.3.4", now)
		snap1 := persist(t, mustSnapshot(t, fm))
		again := New(quietLogger())
		if err := again.Restore(io.NopCloser(bytes.NewReader(snap1))); err != nil {
			t.Fatalf("a snapshot of a restored state does not restore: %v", err)
		}
		w := &world{now: T0, probes: []string{"1.2.3.4", "10.0.0.0/8", "::1", "0.0.0.0/0", "::/0"}}
		compareDumps(t, "snapshot round trip of a restored state", w.dump(t, again), w.dump(t, fm))
	})
}

// FuzzParseRange: IP and CIDR values from clients, peers and CAPI.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "10.0.0.0/8", "::1", "2001:db8::/32", "::ffff:1.2.3.4", "::ffff:1.2.3.0/120",
		"1.2.3.4/32", "0.0.0.0/0", "::/0", "fe80::1%eth0", " 1.2.3.4 ", "1.2.3.4/33", "bogus", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			if r != (IPRange{}) {
				t.Fatalf("error with a range: %+v", r)
			}
			return
		}
		var k checker
		k.ipRange("r", &r)
		if k.err != nil {
			t.Fatalf("ParseRange(%q) = %+v: %v", s, r, k.err)
		}
		if r.End.Less(r.Start) || !r.Contains(r) {
			t.Fatalf("ParseRange(%q) = %+v: empty interval", s, r)
		}
		if IsIPScope("ip") {
			if r2, err := ParseRange(s); err != nil || r2 != r {
				t.Fatalf("ParseRange(%q) not deterministic", s)
			}
		}
	})
}
