package notify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/halapi/halapi/fsm"
)

// direct applies validated commands straight to an FSM (a one-node raft).
type direct struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
	fail  error // when set, applies fail (a lost quorum)
	// failIf limits fail to the commands it accepts (nil: all)
	failIf func(fsm.Command) bool
}

func (d *direct) Apply(_ context.Context, c fsm.Command) (*fsm.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil && (d.failIf == nil || d.failIf(c)) {
		return nil, d.fail
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	c.Time = time.Now().UnixNano()
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	d.index++
	return d.f.Apply(&raft.Log{Index: d.index, Type: raft.LogCommand, Data: data}).(*fsm.Result), nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type denv struct {
	t     *testing.T
	f     *fsm.FSM
	ap    *direct
	clk   *clock
	pdir  string
	out   string
	cfgMu sync.Mutex
	cfg   string
}

func newDenv(t *testing.T, cfg string) *denv {
	f := fsm.New(nil)
	e := &denv{t: t, f: f, ap: &direct{f: f}, clk: &clock{t: time.Unix(1_800_000_000, 0)}, pdir: fakePluginDir(t, "fake")}
	e.out = filepath.Join(t.TempDir(), "received")
	e.setConfig(cfg)
	return e
}

func (e *denv) setConfig(cfg string) {
	e.cfgMu.Lock()
	defer e.cfgMu.Unlock()
	e.cfg = "type: fake\nname: n1\nout: " + e.out + "\nformat: '{{range .}}{{.Source.Value}}/{{len .Decisions}} {{end}}'\n" + cfg
}

func (e *denv) configs() ([]*Config, error) {
	e.cfgMu.Lock()
	defer e.cfgMu.Unlock()
	c, _, err := ParseConfigs(map[string][]byte{"n.yaml": []byte(e.cfg)})
	return c, err
}

func (e *denv) dispatcher() *Dispatcher {
	return NewDispatcher(Options{Plugins: PluginOptions{Dir: e.pdir}, Tick: 10 * time.Millisecond, Now: e.clk.now,
		RetryBackoff: func(int) time.Duration { return 5 * time.Millisecond }, PersistIdle: time.Millisecond},
		e.f, e.ap, e.configs, nil)
}

// run starts d as a leader job; the returned stop cancels it and waits.
func (e *denv) run(d *Dispatcher) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.RunLeader(ctx) }()
	e.waitFor("plugins running", func() bool { on, _ := d.Active(); return on })
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			e.t.Fatal("dispatcher did not stop")
		}
		return nil
	}
}

// push stores alerts from value prefix p, each with the notifications given.
func (e *denv) push(p string, n int, notify ...fsm.AlertNotify) {
	var as []fsm.NewAlert
	for i := range n {
		v := fmt.Sprintf("%s%d", p, i)
		as = append(as, fsm.NewAlert{Alert: fsm.Alert{Scenario: "s", Source: fsm.Source{Scope: "Ip", Value: v}, Notify: notify,
			StartAt: 1, StopAt: 1},
			Decisions: []fsm.Decision{{Origin: "crowdsec", Type: "ban", Scope: "Ip", Value: "10.0.0.1", Scenario: "s",
				Until: time.Now().Add(time.Hour).UnixNano()}}})
	}
	if _, err := e.ap.Apply(context.Background(), fsm.Command{Type: fsm.CmdAlertsCreate, Body: fsm.AlertsCreate{Alerts: as}}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *denv) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *denv) texts() []string {
	var out []string
	for _, m := range received(e.t, e.out) {
		if m["name"] != "n1" {
			e.t.Fatalf("notification for %q", m["name"])
		}
		out = append(out, strings.TrimSpace(m["text"]))
	}
	return out
}

func (e *denv) state() fsm.NotifyState {
	st, _ := e.f.NotifyState("n1")
	return st
}

var n1 = fsm.AlertNotify{Name: "n1"}

// group_threshold alone: once that many are pending, everything pending
// goes, in chunks of that size (the reference delivers its whole queue,
// chunked); fewer wait (as in the reference); alerts for other
// notifications are skipped.
func TestDispatchGroupThreshold(t *testing.T) {
	e := newDenv(t, "group_threshold: 3\n")
	d := e.dispatcher()
	stop := e.run(d)
	e.push("a", 7, n1)
	e.push("other", 2, fsm.AlertNotify{Name: "n2"})
	e.waitFor("3 batches", func() bool { return len(e.texts()) == 3 })
	if got := e.texts(); got[0] != "a0/1 a1/1 a2/1" || got[1] != "a3/1 a4/1 a5/1" || got[2] != "a6/1" {
		t.Fatalf("batches %q", got)
	}
	e.push("b", 2, n1)
	e.waitFor("2 pending", func() bool { l, _ := d.LiveState("n1"); return l.Pending == 2 })
	if n := len(e.texts()); n != 3 {
		t.Fatalf("%d batches below the threshold", n)
	}
	e.push("c", 1, n1)
	e.waitFor("4th batch", func() bool { return len(e.texts()) == 4 })
	if got := e.texts()[3]; got != "b0/1 b1/1 c0/1" {
		t.Fatalf("4th batch %q", got)
	}
	e.waitFor("cursor", func() bool { return e.state().Sent == 10 })
	st := e.state()
	if st.Batches != 4 || st.Lost != 0 || st.Cursor != e.f.LastAlertID() {
		t.Fatalf("state %+v, last alert %d", st, e.f.LastAlertID())
	}
	if v := testutil.ToFloat64(d.Metrics().sent.WithLabelValues("n1")); v != 10 {
		t.Fatalf("sent metric %v", v)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// group_wait alone: what is pending goes when the wait has elapsed, one
// Notify per alert (the reference chunks by group_threshold, 1 when unset);
// both: the threshold sends at once, the wait sends what stays below it.
func TestDispatchGroupWait(t *testing.T) {
	e := newDenv(t, "group_wait: 30s\n")
	d := e.dispatcher()
	stop := e.run(d)
	e.push("a", 3, n1)
	e.waitFor("3 pending", func() bool { l, _ := d.LiveState("n1"); return l.Pending == 3 })
	if n := len(e.texts()); n != 0 {
		t.Fatalf("%d sent before group_wait", n)
	}
	e.clk.add(30 * time.Second)
	e.waitFor("3 sent", func() bool { return len(e.texts()) == 3 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	e2 := newDenv(t, "group_wait: 30s\ngroup_threshold: 4\n")
	d2 := e2.dispatcher()
	stop2 := e2.run(d2)
	e2.push("a", 4, n1)
	e2.waitFor("threshold batch", func() bool { return len(e2.texts()) == 1 })
	if got := e2.texts()[0]; got != "a0/1 a1/1 a2/1 a3/1" {
		t.Fatalf("batch %q", got)
	}
	e2.push("b", 2, n1)
	e2.waitFor("2 pending", func() bool { l, _ := d2.LiveState("n1"); return l.Pending == 2 })
	if n := len(e2.texts()); n != 1 {
		t.Fatalf("%d batches before group_wait", n)
	}
	e2.clk.add(31 * time.Second)
	e2.waitFor("wait batch", func() bool { return len(e2.texts()) == 2 })
	if got := e2.texts()[1]; got != "b0/1 b1/1" {
		t.Fatalf("batch %q", got)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
}

// A plugin that keeps failing is retried max_retry times, then the batch
// is counted lost (replicated counters, metric, last error) and the cursor
// moves on; the next batch is delivered.
func TestDispatchRetryThenLoss(t *testing.T) {
	e := newDenv(t, "max_retry: 1\nfail_first: 2\n")
	d := e.dispatcher()
	stop := e.run(d)
	e.push("a", 1, n1)
	e.waitFor("loss recorded", func() bool { return e.state().Lost == 1 })
	st := e.state()
	if st.Sent != 0 || st.Cursor != 1 || !strings.Contains(st.LastError, "fake failure 2") {
		t.Fatalf("state %+v", st)
	}
	if v := testutil.ToFloat64(d.Metrics().lost.WithLabelValues("n1")); v != 1 {
		t.Fatalf("lost metric %v", v)
	}
	if v := testutil.ToFloat64(d.Metrics().failedAttempts.WithLabelValues("n1")); v != 2 {
		t.Fatalf("failed attempts metric %v", v)
	}
	e.push("b", 1, n1)
	e.waitFor("delivered", func() bool { return e.state().Sent == 1 })
	if got := e.texts(); len(got) != 1 || got[0] != "b0/1" {
		t.Fatalf("received %q", got)
	}
	if st := e.state(); st.LastError != "" || st.Lost != 1 {
		t.Fatalf("state after success %+v", st)
	}
	b, _ := os.ReadFile(e.out + ".attempts")
	if n := strings.Count(string(b), "\n"); n != 3 {
		t.Fatalf("%d attempts, want 2 failed + 1", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A Notify that never answers is cut at the config's timeout, like a
// failure.
func TestDispatchTimeout(t *testing.T) {
	e := newDenv(t, "max_retry: 1\ntimeout: 50ms\nhang: true\n")
	d := e.dispatcher()
	stop := e.run(d)
	start := time.Now()
	e.push("a", 1, n1)
	e.waitFor("loss recorded", func() bool { return e.state().Lost == 1 })
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("timeout not honoured: %v", el)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A new leader resumes from the replicated cursor: nothing is sent twice,
// nothing is skipped; the plugin processes of a term are gone when it ends.
func TestDispatchResumeAfterLeaderChange(t *testing.T) {
	e := newDenv(t, "")
	d1 := e.dispatcher()
	stop := e.run(d1)
	e.push("a", 3, n1)
	e.waitFor("3 sent", func() bool { return e.state().Sent == 3 })
	pids := d1.PluginPIDs()
	if len(pids) != 1 {
		t.Fatalf("plugin pids %v", pids)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("plugin %d still running after the term (%v)", pid, err)
		}
	}
	e.push("b", 2, n1) // while no leader runs
	d2 := e.dispatcher()
	stop = e.run(d2)
	e.waitFor("5 sent", func() bool { return e.state().Sent == 5 })
	got := strings.Join(e.texts(), " ")
	if got != "a0/1 a1/1 a2/1 b0/1 b1/1" {
		t.Fatalf("received %q", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// A cursor write that fails after the delivery (leadership lost) ends the
// run with an error; the next run repeats only that batch and reports it
// (the batch was announced in flight).
func TestDispatchCursorWriteLostRepeatsOneBatch(t *testing.T) {
	e := newDenv(t, "group_threshold: 2\n")
	d := e.dispatcher()
	stop := e.run(d)
	e.push("a", 2, n1)
	e.waitFor("first batch", func() bool { return e.state().Sent == 2 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	e.push("b", 2, n1)
	e.ap.mu.Lock()
	e.ap.fail = errors.New("no quorum")
	e.ap.failIf = func(c fsm.Command) bool {
		nc, ok := c.Body.(fsm.NotifyCursor)
		return ok && nc.InFlight == 0 // the announce passes, the outcome is lost
	}
	e.ap.mu.Unlock()
	d = e.dispatcher()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := d.RunLeader(ctx) // delivers b0 b1, cannot record it
	if err == nil || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("run: %v", err)
	}
	if st := e.state(); st.InFlight != 4 || st.Cursor != 2 {
		t.Fatalf("state after the lost write %+v", st)
	}
	e.ap.mu.Lock()
	e.ap.fail = nil
	e.ap.mu.Unlock()
	d = e.dispatcher()
	stop = e.run(d)
	e.waitFor("cursor", func() bool { return e.state().Sent == 4 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := e.texts(); strings.Join(got, "|") != "a0/1 a1/1|b0/1 b1/1|b0/1 b1/1" {
		t.Fatalf("received %q", got)
	}
	if v := testutil.ToFloat64(d.Metrics().repeated.WithLabelValues("n1")); v != 1 {
		t.Fatalf("repeated metric %v", v)
	}
	if st := e.state(); st.InFlight != 0 || st.Cursor != 4 {
		t.Fatalf("final state %+v", st)
	}
}

// A notification-only profile that matched before the one that set the
// decisions gets the alert without decisions, as in the reference.
func TestDispatchNoDecisionsCopy(t *testing.T) {
	e := newDenv(t, "")
	stop := e.run(e.dispatcher())
	e.push("a", 1, fsm.AlertNotify{Name: "n1", NoDecisions: true})
	e.waitFor("sent", func() bool { return e.state().Sent == 1 })
	if got := e.texts(); got[0] != "a0/0" {
		t.Fatalf("received %q", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// Changing the configs restarts the plugins with the new ones.
func TestDispatchConfigReload(t *testing.T) {
	e := newDenv(t, "")
	d := e.dispatcher()
	stop := e.run(d)
	first := d.PluginPIDs()
	e.setConfig("group_threshold: 2\n")
	e.waitFor("restart", func() bool {
		p := d.PluginPIDs()
		return len(p) == 1 && p[0] != first[0]
	})
	e.push("a", 2, n1)
	e.waitFor("batch of 2", func() bool { return len(e.texts()) == 1 })
	if got := e.texts()[0]; got != "a0/1 a1/1" {
		t.Fatalf("received %q", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

func TestStartPluginsRefusesBadBinary(t *testing.T) {
	dir := t.TempDir()
	cfgs, _, _ := ParseConfigs(map[string][]byte{"a.yaml": []byte("type: fake\nname: n1\n")})
	_, err := StartPlugins(context.Background(), PluginOptions{Dir: dir}, cfgs)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "notification-fake")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	for mode, want := range map[os.FileMode]string{0o720: "group writable", 0o707: "world writable", 0o600: "not executable"} {
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := CheckPlugins(PluginOptions{Dir: dir}, cfgs); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
	if err := os.Chmod(p, 0o700|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode()&os.ModeSetgid != 0 {
		if err := CheckBinary(p); err == nil || !strings.Contains(err.Error(), "setgid") {
			t.Errorf("setgid: %v", err)
		}
	}
	if err := CheckPlugins(PluginOptions{Dir: dir, User: "nobody"}, cfgs); err == nil || !strings.Contains(err.Error(), "both plugin user and group") {
		t.Errorf("user without group: %v", err)
	}
	if os.Geteuid() != 0 {
		if err := CheckPlugins(PluginOptions{Dir: dir, User: "nobody", Group: "nogroup"}, cfgs); err == nil || !strings.Contains(err.Error(), "not root") {
			t.Errorf("other user when not root: %v", err)
		}
	}
}
