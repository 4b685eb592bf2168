package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestValidateAcceptsRealCommands(t *testing.T) {
	big := make([]Decision, 1000) // one CAPI chunk
	for i := range big {
		big[i] = Decision{Origin: "CAPI", Type: "ban", Scope: "Ip", Value: "10.0.0.1", Scenario: "crowdsecurity/ssh-bf"}
	}
	alerts := make([]NewAlert, 500) // one full AlertsCreate entry
	for i := range alerts {
		alerts[i] = NewAlert{Alert: Alert{Scenario: "crowdsecurity/ssh-bf", Message: "m", Source: Source{Scope: "Ip", Value: "1.2.3.4"},
			Events: []Event{{Meta: []KV{{Key: "source_ip", Value: "1.2.3.4"}}}}},
			Decisions: []Decision{{Origin: "crowdsec", Type: "ban", Scope: "Ip", Value: "1.2.3.4"}}}
	}
	hub := bytes.Repeat([]byte("x"), 4<<20)
	cmds := []Command{
		{Type: CmdSetJWTKey, Body: SetJWTKey{Key: []byte("k")}},
		{Type: CmdMachineCreate, Body: &MachineCreate{Machine: Machine{ID: "m1", PasswordHash: []byte("h"), AuthType: AuthPassword}}},
		{Type: CmdMachineUpdate, Body: MachineUpdate{ID: "m1", HubState: hub, Scenarios: ptr(strings.Repeat("a/b,", 10000))}},
		{Type: CmdMachineDelete, Body: MachineDelete{IDs: []string{"m1"}}},
		{Type: CmdBouncerCreate, Body: BouncerCreate{Bouncer: Bouncer{Name: "fw@1.2.3.4", KeyHash: "h", AuthType: AuthAPIKey}}},
		{Type: CmdBouncerUpdate, Body: BouncerUpdate{Name: "fw", IP: ptr("1.2.3.4")}},
		{Type: CmdBouncerDelete, Body: BouncerDelete{Names: []string{"fw"}}},
		{Type: CmdAlertsCreate, Body: AlertsCreate{MachineID: "m1", Alerts: alerts}},
		{Type: CmdAlertsCreate, Body: AlertsCreate{Alerts: []NewAlert{{Alert: Alert{Scenario: "cscli import"}, Decisions: big}}}},
		{Type: CmdAlertsDelete, Body: AlertsDelete{IDs: []int64{1}}},
		{Type: CmdAlertsDelete, Body: AlertsDelete{Filter: &AlertFilter{IP: rangePtr("10.0.0.0/8"), Scope: "Ip"}}},
		{Type: CmdDecisionsExpire, Body: DecisionsExpire{Filter: &DecisionFilter{IP: rangePtr("2001:db8::/32"), Scopes: []string{"Ip"}}}},
		{Type: CmdFlush, Body: Flush{MaxAge: 7 * 24 * hour, MaxItems: 5000}},
		{Type: CmdAllowlistCreate, Body: AllowlistCreate{Name: "l", Description: "d"}},
		{Type: CmdAllowlistDelete, Body: AllowlistDelete{Name: "l"}},
		{Type: CmdAllowlistAdd, Body: AllowlistAdd{Name: "l", Items: []AllowlistItem{{Value: "1.2.3.0/24"}}}},
		{Type: CmdAllowlistRemove, Body: AllowlistRemove{Name: "l", Values: []string{"1.2.3.0/24"}}},
		{Type: CmdSetConfig, Body: SetConfig{Key: "capi:token", Value: hub}},
		{Type: CmdImportDecisions, Body: ImportDecisions{Alert: Alert{Scenario: "update : +1000/-0 IPs"}, Decisions: big}},
		{Type: CmdExpireByValue, Body: ExpireByValue{Origin: "CAPI", Items: []ValueRef{{Scope: "ip", Value: "1.2.3.4"}}}},
		{Type: CmdExpireSet, Body: ExpireSet{Origin: "lists", Scenario: "firehol", KeepAlertID: 3}},
		{Type: CmdAllowlistReplace, Body: AllowlistReplace{Name: "c", AllowlistID: "x", Items: []AllowlistItem{{Value: "::1"}}}},
		{Type: CmdTouch, Body: Touch{Machines: []MachineTouch{{ID: "m", LastHeartbeat: T0}}, Bouncers: []BouncerTouch{{Name: "b", Cursor: 3}}}},
	}
	for _, c := range cmds {
		if err := c.Validate(); err != nil {
			t.Errorf("%T: %v", c.Body, err)
		}
		// and the same after a round trip through the log format
		data, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeValid(data); err != nil {
			t.Errorf("%T after decode: %v", c.Body, err)
		}
	}
}

func rangePtr(s string) *IPRange {
	r, err := ParseRange(s)
	if err != nil {
		panic(err)
	}
	return &r
}

func TestValidateRefuses(t *testing.T) {
	long := strings.Repeat("n", MaxName+1)
	badRange := rangePtr("10.0.0.0/8")
	badRange.Start.Lo++ // not prefix-aligned
	cases := []struct {
		c    Command
		want string
	}{
		{Command{Type: CmdMachineCreate, Body: MachineCreate{}}, "machine.id: is required"},
		{Command{Type: CmdMachineCreate, Body: MachineCreate{Machine: Machine{ID: "a\x00b"}}}, "control character"},
		{Command{Type: CmdMachineCreate, Body: MachineCreate{Machine: Machine{ID: "a\u0085b"}}}, "control character"},
		{Command{Type: CmdMachineCreate, Body: MachineCreate{Machine: Machine{ID: "a\xffb"}}}, "not valid UTF-8"},
		{Command{Type: CmdBouncerCreate, Body: BouncerCreate{Bouncer: Bouncer{Name: long}}}, "longer than"},
		{Command{Type: CmdMachineUpdate, Body: MachineUpdate{ID: "m", HubState: make([]byte, MaxBlob+1)}}, "hubstate: larger than"},
		{Command{Type: CmdMachineDelete, Body: MachineDelete{}}, "ids: is required"},
		{Command{Type: CmdAlertsCreate, Body: AlertsCreate{Alerts: make([]NewAlert, MaxAlertsPerEntry+1)}}, "alerts: has"},
		{Command{Type: CmdAlertsCreate, Body: AlertsCreate{Alerts: []NewAlert{{Decisions: []Decision{{Scope: "Range", Value: "10.0.0.0/33"}}}}}}, "invalid ip address"},
		{Command{Type: CmdAlertsCreate, Body: AlertsCreate{Alerts: []NewAlert{{Alert: Alert{Message: strings.Repeat("m", MaxText+1)}}}}}, "message: longer"},
		{Command{Type: CmdAlertsDelete, Body: AlertsDelete{Filter: &AlertFilter{IP: badRange}}}, "not an aligned prefix"},
		{Command{Type: CmdDecisionsExpire, Body: DecisionsExpire{Filter: &DecisionFilter{IP: &IPRange{Fam: 4, Bits: 40}}}}, "prefix length"},
		{Command{Type: CmdDecisionsExpire, Body: DecisionsExpire{Filter: &DecisionFilter{IP: &IPRange{Fam: 5}}}}, "family"},
		{Command{Type: CmdFlush, Body: Flush{MaxAge: -1}}, "max_age: is negative"},
		{Command{Type: CmdAllowlistAdd, Body: AllowlistAdd{Name: "l", Items: []AllowlistItem{{Value: "bogus"}}}}, "invalid ip address 'bogus'"},
		{Command{Type: CmdAllowlistCreate, Body: AllowlistCreate{Name: "l\n"}}, "control character"},
		{Command{Type: CmdSetConfig, Body: SetConfig{}}, "key: is required"},
		{Command{Type: CmdImportDecisions, Body: ImportDecisions{Decisions: []Decision{{Scope: "Ip", Value: ""}}}}, "invalid ip address"},
		{Command{Type: CmdExpireSet, Body: ExpireSet{Origin: "lists"}}, "scenario: is required"},
		{Command{Type: CmdTouch, Body: Touch{Bouncers: []BouncerTouch{{Name: "b", LastPull: -5}}}}, "negative"},
		{Command{Type: CmdSetJWTKey, Body: SetJWTKey{}}, "key: is required"},
		{Command{Type: CmdFlush, Body: MachineDelete{IDs: []string{"x"}}}, "does not take"},
		{Command{Type: 0x55, Body: Flush{}}, "unknown command type"},
		{Command{Type: CmdFlush}, "has no body"},
		{Command{Type: CmdFlush, Body: (*Flush)(nil)}, "has no body"},
	}
	for _, c := range cases {
		err := c.c.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%T %+v: err = %v, want %q", c.c.Body, c.c.Body, err, c.want)
			continue
		}
		if !errors.Is(err, ErrInvalid) || CodeOf(err) != CodeInvalid {
			t.Errorf("%v: code %v, want invalid", err, CodeOf(err))
		}
	}
	if _, err := DecodeValid([]byte("\x01\x01junk")); CodeOf(err) != CodeInvalid || !strings.Contains(err.Error(), "undecodable") {
		t.Errorf("garbage: %v", err)
	}
}

func TestResultCodes(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m"}})
	h.must(CmdAllowlistCreate, T0, AllowlistCreate{Name: "l"})
	h.must(CmdAllowlistReplace, T0, AllowlistReplace{Name: "c", AllowlistID: "id"})
	cases := []struct {
		typ  CmdType
		body any
		code Code
		msg  string
	}{
		{CmdMachineCreate, MachineCreate{Machine: Machine{ID: "m"}}, CodeConflict, "user 'm': user already exist"},
		{CmdMachineUpdate, MachineUpdate{ID: "x"}, CodeNotFound, "object not found"},
		{CmdMachineDelete, MachineDelete{IDs: []string{"x"}}, CodeNotFound, "'x' does not exist"},
		{CmdAllowlistCreate, AllowlistCreate{Name: "l"}, CodeConflict, "allowlist 'l' already exists"},
		{CmdAllowlistDelete, AllowlistDelete{Name: "x"}, CodeNotFound, "allowlist 'x' not found"},
		{CmdAllowlistAdd, AllowlistAdd{Name: "c", Items: []AllowlistItem{{Value: "1.1.1.1"}}}, CodeForbidden, "allowlist 'c' is managed by the console"},
		{CmdAllowlistAdd, AllowlistAdd{Name: "l", Items: []AllowlistItem{{Value: "bogus"}}}, CodeInvalid, "invalid ip address 'bogus'"},
		{CmdAlertsDelete, AlertsDelete{IDs: []int64{99}, MustExist: true}, CodeNotFound, "object not found"},
	}
	for _, c := range cases {
		res := h.apply(c.typ, T0, c.body)
		if res.Code != c.code || res.Message != c.msg {
			t.Errorf("%T: %v %q, want %v %q", c.body, res.Code, res.Message, c.code, c.msg)
		}
		if LegacyCode(c.msg) != c.code {
			t.Errorf("legacy classification of %q = %v, want %v", c.msg, LegacyCode(c.msg), c.code)
		}
	}
	if (&Result{}).Err() != nil || (&Result{N: 1}).Err() != nil {
		t.Error("an OK result has an error")
	}
}

// Snapshots keep the code of remembered results; snapshots written by older
// versions (message only) still restore, with the code recovered.
func TestSnapshotDoneCodes(t *testing.T) {
	h := newHarness(t)
	data := entry(t, CmdMachineUpdate, T0, MachineUpdate{ID: "x"})
	id := "req-notfound"
	c, _ := Decode(data)
	c.ID = id
	data, _ = c.Encode()
	if res, _ := h.raw(data).(*Result); res == nil || res.Code != CodeNotFound {
		t.Fatalf("first apply: %+v", res)
	}
	snap := persist(t, mustSnapshot(t, h.f))
	if !bytes.Contains(snap, []byte(`"code":1`)) {
		t.Errorf("snapshot has no code: %s", snap)
	}
	f := restored(t, snap)
	h.f = f
	if res, _ := h.raw(data).(*Result); res == nil || res.Code != CodeNotFound || res.Message != "object not found" {
		t.Fatalf("retry after restore: %+v", res)
	}

	old := `{"meta":{"version":1,"done":[{"id":"a","err":"object not found"},{"id":"b","err":"user 'm': user already exist"},{"id":"c","n":2}],"next_alert_id":1,"next_decision_id":1,"last_index":5}}` + "\n"
	f = New(quietLogger())
	if err := f.Restore(io.NopCloser(strings.NewReader(old))); err != nil {
		t.Fatal(err)
	}
	want := map[string]Result{"a": {Code: CodeNotFound, Message: "object not found"},
		"b": {Code: CodeConflict, Message: "user 'm': user already exist"}, "c": {N: 2}}
	for id, w := range want {
		got, ok := f.s.seen(id)
		if !ok || got.Code != w.Code || got.Message != w.Message || got.N != w.N {
			t.Errorf("old snapshot, %s: %+v, want %+v", id, got, w)
		}
	}
}
