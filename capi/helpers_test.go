package capi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"

	"github.com/halapi/halapi/internal/testutil"
)

// localApplier applies commands straight to an FSM (no raft): the write
// path of a single leader, with every command recorded.
type localApplier struct {
	f      *fsm.FSM
	mu     sync.Mutex
	idx    uint64
	leader atomic.Bool
	cmds   []fsm.CmdType
	sizes  []int
	// lateAnswers: that many applies commit, then report a timeout (an
	// answer lost on a loaded node)
	lateAnswers atomic.Int32
	// lists: every voter applies fsm.ImportList (Supports)
	lists atomic.Bool
}

// Supports is cluster.Node's: the gated compact import only when lists is set.
func (a *localApplier) Supports(t fsm.CmdType) bool { return t != fsm.CmdImportList || a.lists.Load() }

func newLocal() *localApplier {
	a := &localApplier{f: fsm.New(nil)}
	a.leader.Store(true)
	return a
}

func (a *localApplier) IsLeader() bool { return a.leader.Load() }

func (a *localApplier) Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !a.leader.Load() {
		return nil, errors.New("not leader")
	}
	c.Time = time.Now().UnixNano()
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.idx++
	res := a.f.Apply(&raft.Log{Index: a.idx, Type: raft.LogCommand, Data: data}).(*fsm.Result)
	a.cmds = append(a.cmds, c.Type)
	a.sizes = append(a.sizes, countDecisions(c))
	if a.lateAnswers.Add(-1) >= 0 {
		return nil, fmt.Errorf("waiting for the apply: %w", context.DeadlineExceeded)
	}
	return res, nil
}

func countDecisions(c fsm.Command) int {
	switch b := c.Body.(type) {
	case fsm.ImportDecisions:
		return len(b.Decisions)
	case fsm.ImportList:
		return len(b.Values)
	}
	return 0
}

// commands returns how many commands of type t were applied, and the
// decision counts of the import commands.
func (a *localApplier) commands(t fsm.CmdType) (n int, sizes []int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, c := range a.cmds {
		if c == t {
			n++
			if t == fsm.CmdImportDecisions || t == fsm.CmdImportList {
				sizes = append(sizes, a.sizes[i])
			}
		}
	}
	return n, sizes
}

func (a *localApplier) mustApply(t *testing.T, typ fsm.CmdType, body any) *fsm.Result {
	t.Helper()
	res, err := a.Apply(context.Background(), fsm.Command{Type: typ, Body: body})
	if err != nil || res.Err() != nil {
		t.Fatalf("apply %d: %v %v", typ, err, res)
	}
	return res
}

// testConfig: short intervals, no jitter, fast retries.
func testConfig(fake *capitest.Server) Config {
	c := DefaultConfig()
	c.URL = fake.BaseURL()
	c.PushInterval, c.PushJitter = 30*time.Millisecond, 0
	c.PullInterval, c.PullJitter = time.Hour, 0
	c.MetricsInterval, c.MetricsJitter = time.Hour, 0
	c.UsageMetricsInterval, c.UsageMetricsJitter = time.Hour, 0
	c.MetricsCheckInterval = time.Hour
	c.PullGuard = -1
	c.ScenarioPoll, c.WatchInterval = 10*time.Millisecond, 10*time.Millisecond
	c.RetryBase, c.RetryMax, c.MaxTries = 2*time.Millisecond, 20*time.Millisecond, 3
	c.SignalTimeout = 2 * time.Second
	return c
}

func newFake(t *testing.T) *capitest.Server {
	t.Helper()
	fake := capitest.New()
	t.Cleanup(fake.Close)
	return fake
}

// fakeCreds registers credentials on the fake and returns them.
func fakeCreds(fake *capitest.Server, login string) Credentials {
	c := Credentials{URL: fake.BaseURL(), Login: login, Password: "pw-" + login}
	fake.AddWatcher(c.Login, c.Password)
	return c
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, d, what, cond)
}

// logBuffer collects log lines (thread safe).
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), substr)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger(w *logBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// addMachine creates a machine with scenarios (the pull loop waits for one).
func addMachine(t *testing.T, a *localApplier, id, scenarios string) {
	t.Helper()
	a.mustApply(t, fsm.CmdMachineCreate, fsm.MachineCreate{Machine: fsm.Machine{ID: id, AuthType: fsm.AuthPassword,
		Scenarios: scenarios, Validated: true}})
}

// agentAlert is an alert as POST /v1/alerts stores it.
func agentAlert(i int, hash, version, origin string) fsm.NewAlert {
	now := time.Now().UnixNano()
	ip := fmt.Sprintf("192.0.2.%d", i%250+1)
	return fsm.NewAlert{
		Alert: fsm.Alert{UUID: fmt.Sprintf("alert-%d", i), Scenario: "crowdsecurity/ssh-bf", ScenarioHash: hash,
			ScenarioVersion: version, Message: "msg", StartAt: now, StopAt: now, Remediation: true,
			Source: fsm.Source{Scope: "Ip", Value: ip, IP: ip, Cn: "FR", AsNumber: "1234"},
			Meta:   []fsm.KV{{Key: "service", Value: "ssh"}}},
		Decisions: []fsm.Decision{{UUID: fsm.MustUUID(fmt.Sprintf("00000000-0000-4000-8000-%012d", i)), Origin: origin, Type: "ban", Scope: "Ip",
			Value: ip, Scenario: "crowdsecurity/ssh-bf", Until: now + int64(4*time.Hour)}},
	}
}

func pushAlerts(t *testing.T, a *localApplier, machine string, alerts ...fsm.NewAlert) []int64 {
	t.Helper()
	return a.mustApply(t, fsm.CmdAlertsCreate, fsm.AlertsCreate{MachineID: machine, Alerts: alerts}).IDs
}
