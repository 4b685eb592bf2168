package fsm

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestUsageRecordsBoundedMarkedAndSnapshotted(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m1", AuthType: AuthPassword}})
	h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "b1", KeyHash: "k", AuthType: AuthAPIKey}})
	payload := func(i int) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`[{"meta":{"utc_now_timestamp":%d,"window_size_seconds":1800},"items":[]}]`, i))
	}
	for i := range MaxUsageRecords + 3 {
		h.must(CmdUsageAdd, T0+int64(i)*sec, UsageAdd{Kind: UsageLogProcessor, Name: "m1", Metrics: payload(i)})
	}
	us := h.f.Machine("m1").Usage
	if len(us) != MaxUsageRecords || string(us[0].Metrics) != string(payload(3)) || us[0].ReceivedAt != T0+3*sec {
		t.Fatalf("kept %d records, first %s at %d; want the %d newest", len(us), us[0].Metrics, us[0].ReceivedAt, MaxUsageRecords)
	}
	// a bouncer's records, and the byte bound
	big := json.RawMessage(`[` + strings.Repeat(`{"x":1},`, MaxUsageBytes/8/3) + `{}]`)
	for range 4 {
		h.must(CmdUsageAdd, T0, UsageAdd{Kind: UsageRemediation, Name: "b1", Metrics: big})
	}
	size := 0
	for _, r := range h.f.Bouncer("b1").Usage {
		size += len(r.Metrics)
	}
	if n := len(h.f.Bouncer("b1").Usage); n != 2 || size > MaxUsageBytes {
		t.Fatalf("bouncer keeps %d records, %d bytes; want 2 within %d", n, size, MaxUsageBytes)
	}
	// forwarded up to the 5th: those are marked, only the newest sent one kept
	h.must(CmdUsageSent, T0+20*sec, UsageSent{Marks: []UsageMark{{Kind: UsageLogProcessor, Name: "m1", UpTo: T0 + 5*sec},
		{Kind: UsageRemediation, Name: "gone", UpTo: T0}}})
	us = h.f.Machine("m1").Usage
	if len(us) != MaxUsageRecords-2 || !us[0].Sent || us[0].ReceivedAt != T0+5*sec || us[1].Sent {
		t.Fatalf("after marking: %+v", us)
	}
	if n := len(Unsent(us)); n != MaxUsageRecords-3 {
		t.Fatalf("unsent %d", n)
	}
	// a new record drops the sent one
	h.must(CmdUsageAdd, T0+30*sec, UsageAdd{Kind: UsageLogProcessor, Name: "m1", Metrics: payload(99)})
	if us = h.f.Machine("m1").Usage; len(Unsent(us)) != len(us) {
		t.Fatalf("sent record kept after a newer one: %+v", us)
	}
	// snapshot round trip keeps them
	f2 := roundTrip(t, h.f)
	if got, want := fmt.Sprint(f2.Machine("m1").Usage), fmt.Sprint(h.f.Machine("m1").Usage); got != want {
		t.Fatalf("restored usage %s, want %s", got, want)
	}
	if len(f2.Bouncer("b1").Usage) != 2 {
		t.Fatal("bouncer usage lost in the snapshot")
	}
	// unknown component: not found, nothing stored
	if res := h.apply(CmdUsageAdd, T0, UsageAdd{Kind: UsageLogProcessor, Name: "nobody", Metrics: payload(1)}); res.Code != CodeNotFound {
		t.Fatalf("unknown machine: %+v", res)
	}
}

func TestUsageCommandsValidated(t *testing.T) {
	for _, c := range []struct {
		body any
		want string
	}{
		{&UsageAdd{Kind: "xx", Name: "a", Metrics: json.RawMessage(`[]`)}, "kind"},
		{&UsageAdd{Kind: UsageLogProcessor, Name: "", Metrics: json.RawMessage(`[]`)}, "name"},
		{&UsageAdd{Kind: UsageLogProcessor, Name: "a", Metrics: json.RawMessage(`{}`)}, "metrics"},
		{&UsageAdd{Kind: UsageLogProcessor, Name: "a", Metrics: json.RawMessage(`[`)}, "metrics"},
		{&UsageAdd{Kind: UsageLogProcessor, Name: "a", Metrics: json.RawMessage(`[` + strings.Repeat(" ", MaxUsageBytes) + `]`)}, "longer"},
		{&UsageSent{Marks: []UsageMark{{Kind: "lp", Name: "a"}, {Kind: "q", Name: "b"}}}, "marks[1].kind"},
	} {
		typ := CmdUsageAdd
		if _, ok := c.body.(*UsageSent); ok {
			typ = CmdUsageSent
		}
		err := Command{Type: typ, Body: c.body}.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one naming %q", c.body, err, c.want)
		}
	}
	if err := (Command{Type: CmdUsageAdd, Body: &UsageAdd{Kind: "rc", Name: "b", Metrics: json.RawMessage(`[]`)}}).Validate(); err != nil {
		t.Errorf("valid body refused: %v", err)
	}
}

// metrics_max_age: records received before the cut are dropped, on
// machines and bouncers alike.
func TestUsageFlush(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m1", AuthType: AuthPassword}})
	h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "b1", KeyHash: "k", AuthType: AuthAPIKey}})
	for i := range 3 {
		h.must(CmdUsageAdd, T0+int64(i)*hour, UsageAdd{Kind: UsageLogProcessor, Name: "m1", Metrics: json.RawMessage(`[]`)})
		h.must(CmdUsageAdd, T0+int64(i)*hour, UsageAdd{Kind: UsageRemediation, Name: "b1", Metrics: json.RawMessage(`[]`)})
	}
	if res := h.must(CmdUsageFlush, T0+3*hour, UsageFlush{Before: T0 + 2*hour}); res.N != 4 {
		t.Fatalf("flushed %d records, want 4", res.N)
	}
	if m, b := h.f.Machine("m1").Usage, h.f.Bouncer("b1").Usage; len(m) != 1 || m[0].ReceivedAt != T0+2*hour || len(b) != 1 {
		t.Fatalf("after flush: machine %+v bouncer %+v", m, b)
	}
	if err := (Command{Type: CmdUsageFlush, Body: UsageFlush{}}).Validate(); err == nil {
		t.Fatal("flush without a time accepted")
	}
}
