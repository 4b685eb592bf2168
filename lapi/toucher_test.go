package lapi

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// relayCluster is a one-node raft (direct) that counts the commands it is
// given and plays either the leader or a follower that relays touches.
type relayCluster struct {
	*direct
	mu       sync.Mutex
	leader   bool
	applied  []fsm.CmdType
	relayed  []fsm.Touch
	relayErr error
	sink     func(fsm.Touch)
}

func (c *relayCluster) Apply(ctx context.Context, cmd fsm.Command) (*fsm.Result, error) {
	c.mu.Lock()
	c.applied = append(c.applied, cmd.Type)
	c.mu.Unlock()
	return c.direct.Apply(ctx, cmd)
}

func (c *relayCluster) IsLeader() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

func (c *relayCluster) RelayTouches(_ context.Context, t fsm.Touch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.relayErr != nil {
		return c.relayErr
	}
	c.relayed = append(c.relayed, t)
	return nil
}

func (c *relayCluster) OnTouches(fn func(fsm.Touch)) { c.sink = fn }

// writes returns and forgets the commands applied so far.
func (c *relayCluster) writes() []fsm.CmdType {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.applied
	c.applied = nil
	return w
}

func newRelayEnv(t *testing.T, leader bool) (*env, *relayCluster) {
	return newRelayEnvNode(t, leader, "")
}

func newRelayEnvNode(t *testing.T, leader bool, node string) (*env, *relayCluster) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BcryptCost = 4
	cfg.NodeID = node
	e := &env{t: t, fsm: fsm.New(nil), clock: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	c := &relayCluster{direct: &direct{f: e.fsm, now: e.now}, leader: true}
	s, err := New(cfg, e.fsm, c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.sink == nil {
		t.Fatal("the toucher did not register with the cluster's touch relay")
	}
	s.now = e.now
	s.OnLeadership(true)
	e.srv, e.h = s, s.Handler()
	c.mu.Lock()
	c.leader = leader
	c.mu.Unlock()
	return e, c
}

// pollEverything has bouncer key poll the stream (startup, then deltas)
// and query decisions, and machine token send heartbeats, n times each.
func pollEverything(e *env, key, token string, n int) {
	e.t.Helper()
	for i := range n {
		path := "/v1/decisions/stream"
		if i == 0 {
			path += "?startup=true"
		}
		e.expect(e.do("GET", path, nil, withKey(key)), 200)
		e.expect(e.do("GET", "/v1/decisions?ip=1.2.3.4", nil, withKey(key)), 200)
		e.expect(e.do("GET", "/v1/heartbeat", nil, withToken(token)), 200)
		e.advance(time.Second)
	}
}

// TestNoRaftWritePerBouncerPoll checks DESIGN invariant 4: bouncer polls,
// queries and machine heartbeats write nothing to raft; what they change
// (cursors, last pulls, heartbeats) is written by the toucher, one Touch
// command per flush for everything gathered.
func TestNoRaftWritePerBouncerPoll(t *testing.T) {
	e, c := newRelayEnv(t, true)
	token := e.machine("agent")
	e.expect(e.do("POST", "/v1/alerts", []any{manualAlert("Ip", "1.2.3.4", "ban", "4h", e.now())}, withToken(token)), 201)
	for i := range 5 {
		e.bouncer(fmt.Sprintf("fw%d", i), fmt.Sprintf("key-%d", i))
		// First contact records the bouncer's IP and user agent (a write,
		// once per bouncer and change, not per poll).
		pollEverything(e, fmt.Sprintf("key-%d", i), token, 1)
	}
	e.srv.touches.flush(context.Background())
	c.writes()

	for i := range 5 {
		pollEverything(e, fmt.Sprintf("key-%d", i), token, 20)
	}
	if w := c.writes(); len(w) != 0 {
		t.Fatalf("300 polls, queries and heartbeats made %d raft writes (%v), want none before the toucher flushes", len(w), w)
	}
	e.srv.touches.flush(context.Background())
	if w := c.writes(); len(w) != 1 || w[0] != fsm.CmdTouch {
		t.Fatalf("one flush made the writes %v, want exactly one Touch", w)
	}
	applied := e.fsm.AppliedIndex()
	for i := range 5 {
		b := e.fsm.Bouncer(fmt.Sprintf("fw%d", i))
		if b.Cursor == 0 || b.Cursor > applied || b.LastPull == 0 {
			t.Errorf("bouncer fw%d after the flush: cursor %d (applied %d), last pull %d", i, b.Cursor, applied, b.LastPull)
		}
	}
	// Nothing new: the next flush writes nothing.
	e.srv.touches.flush(context.Background())
	if w := c.writes(); len(w) != 0 {
		t.Fatalf("a flush with nothing gathered wrote %v", w)
	}
}

// TestFollowerRelaysTouches: a follower's toucher writes nothing to raft,
// it relays its touches to the leader; the leader writes what it was
// relayed with its own in one Touch command. A relay that fails keeps the
// touches for the next flush; a leader that does not gather relayed
// touches (an older version) gets them written directly.
func TestFollowerRelaysTouches(t *testing.T) {
	f, fc := newRelayEnv(t, false)
	token := f.machine("agent")
	f.bouncer("fw", "key")
	pollEverything(f, "key", token, 1) // first contact: IP and user agent recorded
	f.srv.touches.flush(context.Background())
	fc.writes()
	fc.relayed = nil
	pollEverything(f, "key", token, 10)

	fc.mu.Lock()
	fc.relayErr = cluster.ErrNotLeader
	fc.mu.Unlock()
	f.srv.touches.flush(context.Background())
	if w := fc.writes(); len(w) != 0 || len(fc.relayed) != 0 {
		t.Fatalf("failed relay: writes %v, relayed %v", w, fc.relayed)
	}
	fc.mu.Lock()
	fc.relayErr = nil
	fc.mu.Unlock()
	f.srv.touches.flush(context.Background())
	if w := fc.writes(); len(w) != 0 {
		t.Fatalf("a follower's flush wrote %v to raft", w)
	}
	if len(fc.relayed) != 1 || len(fc.relayed[0].Bouncers) != 1 || len(fc.relayed[0].Machines) != 1 {
		t.Fatalf("relayed %+v, want one batch with the bouncer and the machine (kept after the failed relay)", fc.relayed)
	}
	got := fc.relayed[0].Bouncers[0]
	if got.Name != "fw" || got.Cursor == 0 || got.LastPull == 0 {
		t.Fatalf("relayed bouncer touch %+v", got)
	}
	// The follower still serves the bouncer from its newest cursor.
	if cur := f.srv.touches.cursor(f.fsm.Bouncer("fw")); cur.Index != got.Cursor {
		t.Errorf("follower's cursor for fw: %d, want %d", cur.Index, got.Cursor)
	}

	// The leader: its own bouncer plus the relayed touches, one entry.
	l, lc := newRelayEnv(t, true)
	ltoken := l.machine("agent")
	l.bouncer("fw", "key")
	l.bouncer("fw2", "key2")
	pollEverything(l, "key2", ltoken, 3)
	lc.writes()
	lc.sink(fc.relayed[0])
	l.srv.touches.flush(context.Background())
	if w := lc.writes(); len(w) != 1 || w[0] != fsm.CmdTouch {
		t.Fatalf("the leader's flush wrote %v, want one Touch (its polls wrote nothing before)", w)
	}
	if b := l.fsm.Bouncer("fw"); b.Cursor != got.Cursor || b.LastPull != got.LastPull {
		t.Errorf("relayed cursor not written: fw has cursor %d, last pull %d; relayed %+v", b.Cursor, b.LastPull, got)
	}
	if b := l.fsm.Bouncer("fw2"); b.Cursor == 0 {
		t.Errorf("the leader's own bouncer fw2 has no cursor after the flush")
	}

	// An older leader: the follower writes its touches itself.
	fc.mu.Lock()
	fc.relayErr = fmt.Errorf("wrapped: %w", cluster.ErrRelayUnsupported)
	fc.mu.Unlock()
	pollEverything(f, "key", token, 1)
	f.srv.touches.flush(context.Background())
	if w := fc.writes(); len(w) != 1 || w[0] != fsm.CmdTouch {
		t.Fatalf("with a leader that does not gather touches the follower wrote %v, want one Touch", w)
	}
}

// TestServedCursorsPruned: once the replicated cursor has caught up with
// the one a node served, the node forgets its own copy (the bouncer is
// still served from the replicated one, never going back); a deleted
// bouncer's copy goes too. One not yet written is kept.
func TestServedCursorsPruned(t *testing.T) {
	e, _ := newRelayEnv(t, true)
	token := e.machine("agent")
	e.bouncer("fw", "key")
	e.bouncer("gone", "key2")
	pollEverything(e, "key", token, 2)
	pollEverything(e, "key2", token, 2)
	tc := e.srv.touches
	tc.prune() // nothing written yet: both kept
	if n := len(tc.served); n != 2 {
		t.Fatalf("served has %d entries before any flush, want 2", n)
	}
	tc.flush(context.Background())
	want := tc.cursor(e.fsm.Bouncer("fw"))
	if _, err := e.srv.apply(context.Background(), fsm.CmdBouncerDelete, fsm.BouncerDelete{Names: []string{"gone"}}); err != nil {
		t.Fatal(err)
	}
	e.bouncer("late", "key3")
	pollEverything(e, "key3", token, 1) // served, not flushed
	tc.prune()
	tc.mu.Lock()
	_, fw := tc.served["fw"]
	_, gone := tc.served["gone"]
	_, late := tc.served["late"]
	tc.mu.Unlock()
	if fw || gone || !late {
		t.Fatalf("after prune: fw kept %v, gone kept %v, late kept %v; want false, false, true", fw, gone, late)
	}
	if got := tc.cursor(e.fsm.Bouncer("fw")); got != want {
		t.Fatalf("fw's cursor after pruning: %+v, want %+v", got, want)
	}
}

// supportingCluster is a relayCluster whose voters all know (or not) the
// commands of this release.
type supportingCluster struct {
	*relayCluster
	all bool
}

func (c *supportingCluster) Supports(fsm.CmdType) bool { return c.all }

// The node that served a bouncer's pull travels with the relayed touch and
// is written by the leader, but only once every voter knows the field.
func TestTouchNamesTheNodeThatServedThePull(t *testing.T) {
	f, fc := newRelayEnvNode(t, false, "n2")
	f.bouncer("fw", "key")
	pollEverything(f, "key", f.machine("agent"), 1)
	f.srv.touches.flush(context.Background())
	if len(fc.relayed) != 1 || len(fc.relayed[0].Bouncers) != 1 {
		t.Fatalf("relayed %+v", fc.relayed)
	}
	if got := fc.relayed[0].Bouncers[0].Node; got != "" {
		t.Fatalf("a cluster that cannot say its voters know the field relayed node %q", got)
	}

	for _, all := range []bool{true, false} {
		l, lc := newRelayEnvNode(t, true, "n1")
		sc := &supportingCluster{relayCluster: lc, all: all}
		l.srv.cluster = sc
		l.bouncer("fw", "key")
		l.bouncer("own", "key2")
		pollEverything(l, "key2", l.machine("agent"), 1)
		lc.sink(fsm.Touch{Bouncers: []fsm.BouncerTouch{{Name: "fw", LastPull: l.now().UnixNano(), Cursor: 3, Node: "n2"}}})
		l.srv.touches.flush(context.Background())
		fw, own := l.fsm.Bouncer("fw"), l.fsm.Bouncer("own")
		switch {
		case all && (fw.LastPullNode != "n2" || own.LastPullNode != "n1"):
			t.Errorf("every voter knows the field: fw pulled on %q (want n2), own on %q (want n1)", fw.LastPullNode, own.LastPullNode)
		case !all && (fw.LastPullNode != "" || own.LastPullNode != ""):
			t.Errorf("an older voter: fw pulled on %q, own on %q, want none written", fw.LastPullNode, own.LastPullNode)
		case fw.LastPull == 0 || own.LastPull == 0:
			t.Errorf("last pulls not written: %d %d", fw.LastPull, own.LastPull)
		}
	}
}
