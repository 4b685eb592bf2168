package fsm

import (
	"strings"
	"testing"
)

func TestNotifyCursorForwardOnlyAndSnapshot(t *testing.T) {
	h := newHarness(t)
	if r := h.must(CmdNotifyCursor, T0, NotifyCursor{Name: "slack", Cursor: 10, Sent: 4, Batches: 1}); r.N != 1 {
		t.Fatalf("first advance: %+v", r)
	}
	// a stale leader's late write moves nothing back, counters still add
	if r := h.must(CmdNotifyCursor, T0+sec, NotifyCursor{Name: "slack", Cursor: 7, Lost: 2, Error: "boom"}); r.N != 0 {
		t.Fatalf("backwards advance: %+v", r)
	}
	st, ok := h.f.NotifyState("slack")
	if !ok || st.Cursor != 10 || st.Sent != 4 || st.Lost != 2 || st.Batches != 1 || st.LastError != "boom" ||
		st.LastSent != T0 || st.UpdatedAt != T0+sec {
		t.Fatalf("state %+v", st)
	}
	h.must(CmdNotifyCursor, T0+2*sec, NotifyCursor{Name: "slack", Cursor: 10, InFlight: 12})
	if st, _ := h.f.NotifyState("slack"); st.InFlight != 12 || st.Cursor != 10 {
		t.Fatalf("announce: %+v", st)
	}
	h.must(CmdNotifyCursor, T0+2*sec, NotifyCursor{Name: "slack", Cursor: 12, Sent: 1, Batches: 1})
	if st, _ := h.f.NotifyState("slack"); st.LastError != "" || st.Cursor != 12 || st.InFlight != 0 {
		t.Fatalf("a delivery clears the last error: %+v", st)
	}
	if _, ok := h.f.NotifyState("email"); ok {
		t.Fatal("unknown name has a state")
	}
	r := roundTrip(t, h.f)
	if got := r.NotifyStates(); len(got) != 1 || got["slack"].Cursor != 12 || got["slack"].Sent != 5 {
		t.Fatalf("after restore %+v", got)
	}
	if !Supported(CmdNotifyCursor) || Baseline(CmdNotifyCursor) {
		t.Fatal("NotifyCursor must be a gated extension")
	}
}

func TestAlertNotifyStoredAndSnapshotted(t *testing.T) {
	h := newHarness(t)
	id, _ := h.alert(T0, "", Alert{Scenario: "s", Source: Source{Scope: "Ip", Value: "1.2.3.4"},
		Notify: []AlertNotify{{Name: "slack_default"}, {Name: "http_default", NoDecisions: true}}}, ban("1.2.3.4", T0+hour))
	a := roundTrip(t, h.f).Alert(id)
	if a == nil || len(a.Notify) != 2 || a.Notify[1] != (AlertNotify{Name: "http_default", NoDecisions: true}) {
		t.Fatalf("alert after restore: %+v", a)
	}
}

// Hostile bodies a peer could send are refused by Validate.
func TestNotifyValidateBounds(t *testing.T) {
	long := strings.Repeat("n", MaxNotifyName+1)
	for _, tc := range []struct {
		body NotifyCursor
		want string
	}{
		{NotifyCursor{Cursor: 1}, "name: is required"},
		{NotifyCursor{Name: long}, "longer than 255"},
		{NotifyCursor{Name: "a\x00b"}, "control character"},
		{NotifyCursor{Name: "a\xffb"}, "not valid UTF-8"},
		{NotifyCursor{Name: "n", Cursor: -1}, "cursor"},
		{NotifyCursor{Name: "n", Sent: -5}, "sent"},
		{NotifyCursor{Name: "n", Lost: -5}, "lost"},
		{NotifyCursor{Name: "n", Batches: -1}, "batches"},
		{NotifyCursor{Name: "n", InFlight: -1}, "in_flight"},
		{NotifyCursor{Name: "n", Sent: 1 << 40}, "sent+lost"},
		{NotifyCursor{Name: "n", Error: strings.Repeat("e", 2000)}, "error"},
	} {
		err := Command{Type: CmdNotifyCursor, Body: tc.body}.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.body, err, tc.want)
		}
	}
	if err := (Command{Type: CmdNotifyCursor, Body: NotifyCursor{Name: "slack_default", Cursor: 5, Sent: 3, Batches: 1}}).Validate(); err != nil {
		t.Fatal(err)
	}

	alert := func(ns []AlertNotify) error {
		return Command{Type: CmdAlertsCreate, Body: AlertsCreate{Alerts: []NewAlert{{Alert: Alert{Scenario: "s", Notify: ns}}}}}.Validate()
	}
	many := make([]AlertNotify, MaxAlertNotify+1)
	for i := range many {
		many[i].Name = "n"
	}
	for _, ns := range [][]AlertNotify{many, {{Name: ""}}, {{Name: long}}, {{Name: "x\ny"}}} {
		if err := alert(ns); err == nil || !strings.Contains(err.Error(), "notify") {
			t.Errorf("alert notify %d names (first %q): %v", len(ns), ns[0].Name, err)
		}
	}
	if err := alert([]AlertNotify{{Name: "slack_default"}}); err != nil {
		t.Fatal(err)
	}
	// a body that decodes but was never validated still applies (totality)
	h := newHarness(t)
	if r := h.apply(CmdNotifyCursor, T0, NotifyCursor{Name: "n", Sent: -1}); r.Code == CodeOK {
		t.Fatal("negative counters applied")
	}
}
