package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// waitDone waits for a goroutine result without sleeping; the timeout only
// turns a hang into a failure.
func waitDone(t *testing.T, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still blocked", what)
		return nil
	}
}

func TestWaitForIndex(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.f.WaitForIndex(ctx, 0); err != nil {
		t.Fatalf("index 0: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- h.f.WaitForIndex(ctx, 3) }()

	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "a"}})
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "b"}})
	// index 3 is not applied yet: a cancelled wait must report the context
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := h.f.WaitForIndex(cancelled, 3); !errors.Is(err, context.Canceled) {
		t.Fatalf("wait for unapplied index with cancelled ctx: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("WaitForIndex(3) returned %v after index 2", err)
	default:
	}
	// applied indexes return at once, even with a cancelled context
	if err := h.f.WaitForIndex(cancelled, 2); err != nil {
		t.Fatalf("wait for applied index: %v", err)
	}
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "c"}})
	if err := waitDone(t, done, "WaitForIndex(3)"); err != nil {
		t.Fatalf("WaitForIndex(3) = %v", err)
	}
	// the state is visible to the waiter once it returns
	if h.f.Machine("c") == nil {
		t.Error("machine of index 3 not visible after the wait")
	}
	if h.f.AppliedIndex() != 3 {
		t.Errorf("applied index = %d", h.f.AppliedIndex())
	}
}

func TestWaitForIndexCancellation(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.f.WaitForIndex(ctx, 100) }()
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "a"}}) // a wake-up that is not enough
	cancel()
	if err := waitDone(t, done, "cancelled wait"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v", err)
	}

	dl, cancel2 := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel2()
	if err := h.f.WaitForIndex(dl, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline wait = %v", err)
	}
}

func TestWaitForIndexManyWaiters(t *testing.T) {
	h := newHarness(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 1; i <= n; i++ {
		wg.Add(1)
		go func(idx uint64) {
			defer wg.Done()
			if err := h.f.WaitForIndex(context.Background(), idx); err != nil {
				errs <- err
				return
			}
			if got := h.f.AppliedIndex(); got < idx {
				errs <- errors.New("returned before its index was applied")
			}
		}(uint64(i))
	}
	for i := 0; i < n; i++ {
		h.must(CmdTouch, T0, Touch{})
	}
	finished := make(chan error, 1)
	go func() { wg.Wait(); close(errs); finished <- nil }()
	waitDone(t, finished, "waiters")
	for err := range errs {
		t.Error(err)
	}
}

func TestNonCommandEntriesAndRestoreWakeWaiters(t *testing.T) {
	h := newHarness(t)
	done := make(chan error, 1)
	go func() { done <- h.f.WaitForIndex(context.Background(), 2) }()
	// raft also hands the FSM configuration / no-op entries
	if out := h.f.Apply(&raft.Log{Index: 1, Type: raft.LogNoop}); out != nil {
		t.Errorf("noop entry result = %v", out)
	}
	if out := h.f.Apply(&raft.Log{Index: 2, Type: raft.LogConfiguration}); out != nil {
		t.Errorf("configuration entry result = %v", out)
	}
	if err := waitDone(t, done, "wait over non-command entries"); err != nil {
		t.Fatal(err)
	}

	// a restore moves the applied index to the snapshot's
	src := newHarness(t)
	for i := 0; i < 7; i++ {
		src.must(CmdTouch, T0, Touch{})
	}
	data := persist(t, mustSnapshot(t, src.f))
	dst := New(quietLogger())
	done2 := make(chan error, 1)
	go func() { done2 <- dst.WaitForIndex(context.Background(), 7) }()
	if err := dst.Restore(&closeTracker{Reader: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	if err := waitDone(t, done2, "wait over restore"); err != nil {
		t.Fatal(err)
	}
	if dst.AppliedIndex() != 7 {
		t.Errorf("applied after restore = %d", dst.AppliedIndex())
	}
}

func TestApplyBatch(t *testing.T) {
	f := New(quietLogger())
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: entry(t, CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m"}})},
		{Index: 2, Type: raft.LogNoop},
		{Index: 3, Type: raft.LogCommand, Data: entry(t, CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m"}})},
		{Index: 4, Type: raft.LogCommand, Data: entry(t, CmdAlertsCreate, T0, AlertsCreate{MachineID: "m",
			Alerts: []NewAlert{{Alert: Alert{Scenario: "s"}, Decisions: []Decision{ban("1.1.1.1", T0+hour)}}}})},
	}
	out := f.ApplyBatch(logs)
	if len(out) != 4 || out[1] != nil {
		t.Fatalf("results = %v", out)
	}
	if r := out[0].(*Result); r.Err() != nil || r.N != 1 {
		t.Errorf("entry 1 = %+v", r)
	}
	if r := out[2].(*Result); r.Err() == nil {
		t.Errorf("entry 3 (duplicate) = %+v", r)
	}
	r := out[3].(*Result)
	if !equalIDs(r.IDs, []int64{1}) {
		t.Errorf("entry 4 = %+v", r)
	}
	if d := f.Decision(1); d == nil || d.CreatedIndex != 4 {
		t.Errorf("decision created index = %+v", d)
	}
	if f.AppliedIndex() != 4 {
		t.Errorf("applied index = %d", f.AppliedIndex())
	}
	// the stream cursor is the last applied command
	if _, _, idx := f.Stream(&DecisionFilter{}, StreamCursor{}, true, at(T0)); idx != 4 {
		t.Errorf("stream index = %d", idx)
	}
	// one batch of four entries, then a lone entry by Apply
	if b, e := f.ApplyCounts(); b != 1 || e != 4 {
		t.Errorf("ApplyCounts = %d batches, %d entries; want 1, 4", b, e)
	}
	f.Apply(&raft.Log{Index: 5, Type: raft.LogNoop})
	if b, e := f.ApplyCounts(); b != 2 || e != 5 {
		t.Errorf("ApplyCounts after Apply = %d batches, %d entries; want 2, 5", b, e)
	}
}

// TestPredecodedEntryNotDecodedAgain: a leader that already decoded a
// forwarded entry hands the command to Apply, which uses it (with the time
// stamped in the bytes) instead of decoding the same bytes again; a hint
// for other bytes, or one forgotten, changes nothing.
func TestPredecodedEntryNotDecodedAgain(t *testing.T) {
	h := newHarness(t)
	data := entry(t, CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "from-bytes"}})
	c, err := DecodeValid(data)
	if err != nil {
		t.Fatal(err)
	}
	// Make the hint tell apart from the bytes: Apply must take the hint.
	c.Body.(*BouncerCreate).Bouncer.Name = "from-hint"
	c.Time = 0
	h.f.Predecoded(data, c)
	if res := h.f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}).(*Result); res.Code != CodeOK {
		t.Fatalf("apply: %+v", res)
	}
	b := h.f.Bouncer("from-hint")
	if b == nil || h.f.Bouncer("from-bytes") != nil {
		t.Fatal("Apply decoded the bytes instead of taking the predecoded command")
	}
	if b.CreatedAt != T0 {
		t.Fatalf("created at %d, want the entry's time %d", b.CreatedAt, T0)
	}
	if len(h.f.hints) != 0 {
		t.Fatalf("%d hints left after use", len(h.f.hints))
	}

	// a forgotten hint is not used: the bytes decide
	data2 := entry(t, CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "second"}})
	h.f.Predecoded(data2, c)
	h.f.Forget(data2)
	h.f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: data2})
	if h.f.Bouncer("second") == nil {
		t.Fatal("a forgotten hint was used")
	}
	// a copy of the bytes (another node's log entry) is decoded as usual
	data3 := entry(t, CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "third"}})
	h.f.Predecoded(data3, c)
	h.f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: append([]byte(nil), data3...)})
	if h.f.Bouncer("third") == nil {
		t.Fatal("a hint for other bytes was used")
	}
	h.f.Forget(data3)
}

// A follower's own forwarded write, decoded while the leader handled it,
// is not decoded again when it comes back through replication with the
// leader's time; a different body under the same ID is decoded from the
// bytes.
func TestHintForwardedUsedForTheSameWriteOnly(t *testing.T) {
	h := newHarness(t)
	fwd := func(id, name string) []byte {
		data, err := Command{Type: CmdBouncerCreate, ID: id, Body: BouncerCreate{Bouncer: Bouncer{Name: name}}}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	replicated := func(data []byte) []byte {
		e := append([]byte(nil), data...)
		StampTime(e, T0)
		return e
	}
	data := fwd("req-1", "from-bytes")
	forget := h.f.HintForwarded(data)
	if len(h.f.idHints) != 1 {
		t.Fatalf("%d hints after HintForwarded, want 1", len(h.f.idHints))
	}
	// make the hint tell apart from the bytes: Apply must take the hint
	hint := h.f.idHints["req-1"]
	hint.cmd.Body.(*BouncerCreate).Bouncer.Name = "from-hint"
	if res := h.f.Apply(rawLog(1, replicated(data))).(*Result); res.Code != CodeOK {
		t.Fatalf("apply: %+v", res)
	}
	b := h.f.Bouncer("from-hint")
	if b == nil || h.f.Bouncer("from-bytes") != nil {
		t.Fatal("Apply decoded the replicated bytes instead of taking the follower's decode")
	}
	if b.CreatedAt != T0 {
		t.Fatalf("created at %d, want the leader's stamp %d", b.CreatedAt, T0)
	}
	if len(h.f.idHints) != 0 {
		t.Fatalf("%d hints left after use", len(h.f.idHints))
	}
	if n, _ := h.f.ForwardHints(); n != 1 {
		t.Fatalf("%d hints taken, want 1", n)
	}
	forget() // after use: a no-op

	// same ID, other body: the bytes decide, and the hint stays until forget
	data2 := fwd("req-2", "hinted")
	forget2 := h.f.HintForwarded(data2)
	h.f.idHints["req-2"].cmd.Body.(*BouncerCreate).Bouncer.Name = "wrong"
	h.f.Apply(rawLog(2, replicated(fwd("req-2", "other"))))
	if h.f.Bouncer("other") == nil || h.f.Bouncer("wrong") != nil {
		t.Fatal("a hint was used for another body under the same ID")
	}
	if len(h.f.idHints) != 1 {
		t.Fatalf("%d hints, want the unused one", len(h.f.idHints))
	}
	forget2()
	if len(h.f.idHints) != 0 {
		t.Fatalf("%d hints left after forget", len(h.f.idHints))
	}

	// no ID: nothing to key a hint by
	h.f.HintForwarded(entry(t, CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "anon"}}))()
	if len(h.f.idHints) != 0 {
		t.Fatal("a hint for an entry without ID")
	}
	// bounded: past maxIDHints, writes are decoded when applied
	for i := range maxIDHints + 10 {
		defer h.f.HintForwarded(fwd(fmt.Sprintf("bulk-%d", i), "b"))()
	}
	if len(h.f.idHints) != maxIDHints {
		t.Fatalf("%d hints held, want at most %d", len(h.f.idHints), maxIDHints)
	}
}
