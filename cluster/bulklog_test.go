package cluster

import (
	"errors"
	"fmt"
	"testing"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/internal/lowprio"
	"github.com/hashicorp/raft"
)

type failingStore struct{ raft.LogStore }

var errDiskFull = errors.New("disk full")

func (failingStore) StoreLogs([]*raft.Log) error { return errDiskFull }

func TestBulkLogWritesOnTheLowPriorityThread(t *testing.T) {
	encode := func(c fsm.Command) []byte {
		t.Helper()
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	small := encode(fsm.Command{Type: fsm.CmdMachineCreate, Body: fsm.MachineCreate{Machine: fsm.Machine{ID: "m1", AuthType: fsm.AuthPassword}}})
	il := fsm.ImportList{Alert: fsm.Alert{Scenario: "lists:big", Source: fsm.Source{Scope: "lists:big", Value: "lists:big"}},
		Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "big", Until: 1 << 62}
	for i := range 6000 {
		il.Values = append(il.Values, fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
	}
	big := encode(fsm.Command{Type: fsm.CmdImportList, Body: il})
	// an alert batch as big as the list is written on raft's goroutine
	var alerts []fsm.NewAlert
	for i := 0; i < 100; i++ {
		alerts = append(alerts, fsm.NewAlert{Alert: fsm.Alert{Scenario: fmt.Sprintf("s%d", i), Message: string(make([]byte, 1000))}})
	}
	alertBatch := encode(fsm.Command{Type: fsm.CmdAlertsCreate, Body: fsm.AlertsCreate{MachineID: "m1", Alerts: alerts}})
	if len(alertBatch) < len(big)/10 || !fsm.HasBulk([]*raft.Log{{Type: raft.LogCommand, Data: big}}) {
		t.Fatalf("test entries: alert batch %d bytes, list %d bytes", len(alertBatch), len(big))
	}

	var runner lowprio.Runner
	inner := raft.NewInmemStore()
	s := bulkLogStore{LogStore: inner, bulk: &runner}
	if err := s.StoreLogs([]*raft.Log{{Index: 1, Type: raft.LogCommand, Data: small}, {Index: 2, Type: raft.LogCommand, Data: alertBatch}}); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLog(&raft.Log{Index: 3, Type: raft.LogNoop}); err != nil {
		t.Fatal(err)
	}
	if n := runner.Runs(); n != 0 {
		t.Fatalf("%d small or alert batches went to the low-priority thread", n)
	}
	if err := s.StoreLogs([]*raft.Log{{Index: 4, Type: raft.LogCommand, Data: small}, {Index: 5, Type: raft.LogCommand, Data: big}}); err != nil {
		t.Fatal(err)
	}
	if n := runner.Runs(); n != 1 {
		t.Fatalf("%d runs on the low-priority thread after a list import, want 1", n)
	}
	for i := uint64(1); i <= 5; i++ {
		var l raft.Log
		if err := inner.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d not stored: %v", i, err)
		}
	}
	last, _ := inner.LastIndex()
	if last != 5 {
		t.Fatalf("last index %d, want 5", last)
	}
	// the store's error reaches raft through the thread hand-off
	f := bulkLogStore{LogStore: failingStore{inner}, bulk: &runner}
	if err := f.StoreLogs([]*raft.Log{{Index: 6, Type: raft.LogCommand, Data: big}}); !errors.Is(err, errDiskFull) {
		t.Fatalf("bulk write error %v, want %v", err, errDiskFull)
	}
	if n := runner.Runs(); n != 2 {
		t.Fatalf("%d runs, want 2", n)
	}
}
