package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

func testRunner(barrier func(context.Context) error) *leaderRunner {
	return &leaderRunner{log: slog.New(slog.NewTextHandler(io.Discard, nil)), barrier: barrier,
		barrierMin: time.Millisecond, barrierMax: 4 * time.Millisecond}
}

// A failing barrier is retried until it succeeds; jobs start only after it
// has succeeded.
func TestLeaderBarrierRetriedJobsAfterBarrier(t *testing.T) {
	var calls atomic.Int32
	var barrierOK atomic.Bool
	lr := testRunner(func(context.Context) error {
		if calls.Add(1) < 4 {
			return errors.New("barrier timed out")
		}
		barrierOK.Store(true)
		return nil
	})
	var gained atomic.Bool
	lr.gained = func() { gained.Store(true) }
	var startedBeforeBarrier atomic.Bool
	var runs atomic.Int32
	lr.add(LeaderJob{Name: "j", Run: func(ctx context.Context) error {
		if !barrierOK.Load() {
			startedBeforeBarrier.Store(true)
		}
		runs.Add(1)
		<-ctx.Done()
		return nil
	}})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { lr.lead(stop); close(done) }()
	waitFor(t, "job start", 5*time.Second, func() bool { return runs.Load() == 1 })
	if calls.Load() != 4 || !gained.Load() || startedBeforeBarrier.Load() {
		t.Fatalf("barrier calls %d (want 4), gained %v, job before barrier %v", calls.Load(), gained.Load(), startedBeforeBarrier.Load())
	}
	close(stop)
	<-done
}

// Leadership lost while the barrier keeps failing: the loop gives up, no
// job ever starts and the observers are not told of a gain.
func TestLeaderBarrierAbandonedOnLoss(t *testing.T) {
	var calls atomic.Int32
	lr := testRunner(func(context.Context) error { calls.Add(1); return errors.New("no") })
	var gained, ran atomic.Bool
	lr.gained = func() { gained.Store(true) }
	lr.add(LeaderJob{Name: "j", Run: func(context.Context) error { ran.Store(true); return nil }})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { lr.lead(stop); close(done) }()
	waitFor(t, "retries", 5*time.Second, func() bool { return calls.Load() >= 3 })
	close(stop)
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("leader loop did not end after leadership loss")
	}
	if gained.Load() || ran.Load() {
		t.Fatalf("gained %v ran %v, want neither", gained.Load(), ran.Load())
	}
}

// Every job's context is cancelled as soon as leadership is lost, and lead
// returns only after the jobs have.
func TestLeaderJobsCancelledOnLoss(t *testing.T) {
	lr := testRunner(func(context.Context) error { return nil })
	var lost atomic.Bool
	lr.lost = func() { lost.Store(true) }
	var running sync.WaitGroup
	var stopped atomic.Int32
	for i := 0; i < 3; i++ {
		running.Add(1)
		lr.add(LeaderJob{Name: "j", Run: func(ctx context.Context) error {
			running.Done()
			<-ctx.Done()
			stopped.Add(1)
			return ctx.Err()
		}})
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { lr.lead(stop); close(done) }()
	running.Wait()
	t0 := time.Now()
	close(stop)
	<-done
	if d := time.Since(t0); d > time.Second {
		t.Fatalf("jobs took %v to stop", d)
	}
	if stopped.Load() != 3 || !lost.Load() {
		t.Fatalf("stopped %d of 3, lost %v", stopped.Load(), lost.Load())
	}
	// A job added while not leading does not run until the next term.
	var late atomic.Bool
	lr.add(LeaderJob{Name: "late", Run: func(context.Context) error { late.Store(true); return nil }})
	time.Sleep(20 * time.Millisecond)
	if late.Load() {
		t.Fatal("job ran while not leading")
	}
}

// A job that returns an error or panics is restarted (with backoff); one
// that returns nil is done for the term; a job added mid-term starts at once.
func TestLeaderJobRestartPolicy(t *testing.T) {
	lr := testRunner(func(context.Context) error { return nil })
	var errRuns, panicRuns, okRuns atomic.Int32
	lr.add(LeaderJob{Name: "err", MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		Run: func(ctx context.Context) error {
			if errRuns.Add(1) < 3 {
				return errors.New("transient")
			}
			<-ctx.Done()
			return nil
		}})
	lr.add(LeaderJob{Name: "panic", MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond,
		Run: func(ctx context.Context) error {
			if panicRuns.Add(1) < 3 {
				panic("boom")
			}
			<-ctx.Done()
			return nil
		}})
	lr.add(LeaderJob{Name: "once", Run: func(context.Context) error { okRuns.Add(1); return nil }})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { lr.lead(stop); close(done) }()
	waitFor(t, "restarts", 5*time.Second, func() bool { return errRuns.Load() == 3 && panicRuns.Load() == 3 })
	var mid atomic.Bool
	lr.add(LeaderJob{Name: "mid", Run: func(context.Context) error { mid.Store(true); return nil }})
	waitFor(t, "job added mid-term", 5*time.Second, mid.Load)
	close(stop)
	<-done
	if okRuns.Load() != 1 || errRuns.Load() != 3 || panicRuns.Load() != 3 {
		t.Fatalf("runs: once %d err %d panic %d", okRuns.Load(), errRuns.Load(), panicRuns.Load())
	}
	// A second term runs every job again.
	stop = make(chan struct{})
	done = make(chan struct{})
	go func() { lr.lead(stop); close(done) }()
	waitFor(t, "second term", 5*time.Second, func() bool { return okRuns.Load() == 2 })
	close(stop)
	<-done
}

// On a real node a registered job runs once it leads, after the barrier
// (the FSM has applied everything committed before).
func TestNodeRunsLeaderJob(t *testing.T) {
	n := openNode(t, t.TempDir())
	defer n.Close()
	createMachine(t, n, "a")
	seen := make(chan bool, 1)
	n.AddLeaderJob(LeaderJob{Name: "check", Run: func(context.Context) error {
		seen <- n.FSM.Machine("a") != nil
		return nil
	}})
	select {
	case ok := <-seen:
		if !ok {
			t.Fatal("leader job ran before the FSM caught up")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("leader job never ran")
	}
}

// A command type outside the baseline is written only when every voter
// advertises it; baseline types are always allowed.
func TestApplyRefusesUnsupportedCommand(t *testing.T) {
	const ext = fsm.CmdType(0x70)
	metas := map[string]memberMeta{
		"n2": {Ext: []uint8{0x70}},
		"n3": {Ext: []uint8{0x71}},
	}
	if got := lackingVoters(ext, "n1", []string{"n1", "n2", "n3", "n4"}, metas); strings.Join(got, ",") != "n3,n4" {
		t.Fatalf("lacking voters %v, want n3 (old) and n4 (unknown)", got)
	}
	metas["n3"] = memberMeta{Ext: []uint8{0x71, 0x70}}
	if got := lackingVoters(ext, "n1", []string{"n1", "n2", "n3"}, metas); len(got) != 0 {
		t.Fatalf("lacking voters %v, want none", got)
	}

	n := openNode(t, t.TempDir())
	defer n.Close()
	_, err := n.Apply(context.Background(), fsm.Command{Type: 0x7f, Body: map[string]string{}})
	if !errors.Is(err, ErrUnsupportedCommand) || !strings.Contains(err.Error(), "127") {
		t.Fatalf("unknown command type: %v, want ErrUnsupportedCommand naming the type", err)
	}
	createMachine(t, n, "baseline-ok")
}
