package fsm

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/halapi/halapi/internal/lowprio"
)

// A batch holding a big entry (a list of a few thousand values) is applied
// on the low-priority thread, lowprio.Nice below the process; small entries are not. The
// state is the same either way (the other tests apply both kinds).
func TestBigEntriesApplyOnTheLowPriorityThread(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("per-thread priority is Linux-only")
	}
	base := processNice(t)
	want := min(base+lowprio.Nice, 19)
	h := newHarness(t)
	small := entry(t, CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "small"}})
	if res := h.f.ApplyBatch([]*raft.Log{rawLog(1, small)})[0].(*Result); res.Err() != nil {
		t.Fatal(res)
	}
	// an alert batch as big as a list still applies on raft's goroutine
	var alerts []NewAlert
	batch := func() []byte { return entry(t, CmdAlertsCreate, T0, AlertsCreate{MachineID: "agent", Alerts: alerts}) }
	for i := 0; len(alerts) == 0 || len(batch()) < bulkMin; i++ {
		alerts = append(alerts, NewAlert{Alert: Alert{Scenario: fmt.Sprintf("crowdsecurity/ssh-bf-%03d", i), Message: strings.Repeat("m", 1000)}})
	}
	h.f.ApplyBatch([]*raft.Log{rawLog(2, batch())})
	if n := h.f.bulk.Runs(); n != 0 {
		t.Fatalf("a bouncer and a batch of %d alerts went to the low-priority thread", len(alerts))
	}

	il := ImportList{Alert: pullAlert("lists:big"), Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "big",
		Until: T0 + hour, Seed: MustUUID("6f1c2a3b-4d5e-4f60-8172-000000000000")}
	for i := range 6000 {
		il.Values = append(il.Values, fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
	}
	big := entry(t, CmdImportList, T0, il)
	if len(big) < bulkMin {
		t.Fatalf("the list entry is %d bytes, under bulkMin %d", len(big), bulkMin)
	}
	res := h.f.ApplyBatch([]*raft.Log{rawLog(3, small), rawLog(4, big)})
	if r := res[1].(*Result); r.Err() != nil || r.N != len(il.Values) {
		t.Fatalf("import: %+v", r)
	}
	if n := h.f.bulk.Runs(); n != 1 {
		t.Fatalf("%d runs on the low-priority thread, want 1", n)
	}
	if got := h.f.Decisions(&DecisionFilter{Origins: []string{"lists"}}, at(T0)); len(got) != len(il.Values) {
		t.Fatalf("%d decisions after the import, want %d", len(got), len(il.Values))
	}
	if err := h.f.bulk.Err(); err != nil {
		t.Skipf("this sandbox refuses setpriority: %v", err)
	}
	var nice int
	var err error
	h.f.bulk.Run(func() { nice, err = lowprio.ThreadNice() })
	if err != nil || nice != want {
		t.Fatalf("the bulk thread runs at nice %d (%v), want %d (the process's %d + %d)", nice, err, want, base, lowprio.Nice)
	}
	if after := processNice(t); after != base {
		t.Fatalf("a caller's thread is at nice %d after a bulk apply, was %d", after, base)
	}
}

func processNice(t *testing.T) int {
	t.Helper()
	n, err := lowprio.ProcessNice()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
