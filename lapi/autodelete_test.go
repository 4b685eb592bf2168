package lapi

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

// TestRetentionAutoDelete: the leader's retention job deletes a password
// machine and an api-key bouncer once they have not been seen for the
// configured ages on the (fake) clock, and nothing before.
func TestRetentionAutoDelete(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.FlushEvery = 10 * time.Millisecond
		c.AutoDelete = fsm.AutoDelete{AgentsPassword: int64(48 * time.Hour), BouncersAPIKey: int64(24 * time.Hour)}
	})
	ctx := context.Background()
	mustApply := func(typ fsm.CmdType, body any) {
		t.Helper()
		if _, err := e.srv.apply(ctx, typ, body); err != nil {
			t.Fatal(err)
		}
	}
	mustApply(fsm.CmdMachineCreate, fsm.MachineCreate{Machine: fsm.Machine{ID: "agent1", AuthType: fsm.AuthPassword, Validated: true}})
	mustApply(fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: fsm.Bouncer{Name: "fw1", KeyHash: "x", AuthType: fsm.AuthAPIKey}})
	seen := e.now().UnixNano()
	mustApply(fsm.CmdTouch, fsm.Touch{Machines: []fsm.MachineTouch{{ID: "agent1", LastHeartbeat: seen}},
		Bouncers: []fsm.BouncerTouch{{Name: "fw1", LastPull: seen}}})

	if err := e.srv.AutoDelete(ctx); err != nil {
		t.Fatal(err)
	}
	e.advance(23 * time.Hour)
	if err := e.srv.AutoDelete(ctx); err != nil || e.fsm.Bouncer("fw1") == nil || e.fsm.Machine("agent1") == nil {
		t.Fatalf("deleted before its age (err %v)", err)
	}

	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = e.srv.Retention(jctx) }() // the leader job
	e.advance(2 * time.Hour)                  // 25 h: the bouncer is due, the machine is not
	waitAutoDeleted(t, func() bool { return e.fsm.Bouncer("fw1") == nil }, "bouncer not auto-deleted after 25 h")
	if e.fsm.Machine("agent1") == nil {
		t.Fatal("machine deleted after 25 h with a 48 h age")
	}
	e.advance(24 * time.Hour)
	waitAutoDeleted(t, func() bool { return e.fsm.Machine("agent1") == nil }, "machine not auto-deleted after 49 h")
}

func waitAutoDeleted(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// flush.metrics_max_age: the leader drops usage records older than the age,
// with an entry only when one is due.
func TestRetentionFlushesOldUsageMetrics(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MetricsMaxAge = 24 * time.Hour })
	ctx := context.Background()
	for _, c := range []struct {
		typ  fsm.CmdType
		body any
	}{
		{fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: fsm.Bouncer{Name: "fw1", KeyHash: "x", AuthType: fsm.AuthAPIKey}}},
		{fsm.CmdUsageAdd, fsm.UsageAdd{Kind: fsm.UsageRemediation, Name: "fw1", Metrics: json.RawMessage(`[{"items":[]}]`)}},
	} {
		if _, err := e.srv.apply(ctx, c.typ, c.body); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.fsm.Bouncer("fw1").Usage); n != 1 {
		t.Fatalf("usage records after the report: %d", n)
	}
	e.advance(23 * time.Hour)
	idx := e.fsm.AppliedIndex()
	if err := e.srv.AutoDelete(ctx); err != nil {
		t.Fatal(err)
	}
	if len(e.fsm.Bouncer("fw1").Usage) != 1 || e.fsm.AppliedIndex() != idx {
		t.Fatalf("a 23 h old record was flushed or an entry written (index %d -> %d)", idx, e.fsm.AppliedIndex())
	}
	e.advance(2 * time.Hour)
	if err := e.srv.AutoDelete(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.fsm.Bouncer("fw1").Usage); n != 0 {
		t.Fatalf("a 25 h old record kept with a 24 h metrics_max_age (%d records)", n)
	}
}
