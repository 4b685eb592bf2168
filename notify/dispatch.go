package notify

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
)

// Store is what the dispatcher reads of the replicated state.
type Store interface {
	AlertsAfter(after int64, limit int) []*fsm.Alert
	AlertDecisions(a *fsm.Alert) []*fsm.Decision
	NotifyState(name string) (fsm.NotifyState, bool)
}

// Applier writes commands through raft (cluster.Node).
type Applier interface {
	Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error)
}

// ConfigSource returns the current notification configs (from files, or
// from the replicated bundle). It is read at every term start and polled
// for changes while leading.
type ConfigSource func() ([]*Config, error)

// Options tune the dispatcher; zero values take the reference's.
type Options struct {
	Plugins PluginOptions
	// Tick is how often grouping is checked (the reference's 1 s).
	Tick time.Duration
	// RetryBackoff is the wait before retry n (n >= 1): by default 1 s
	// doubling to 30 s with ±30% jitter, as the reference.
	RetryBackoff func(n int) time.Duration
	// MaxElapsed bounds the retries of a config without max_retry (5 min).
	MaxElapsed time.Duration
	// MaxPending bounds the alerts held per notification (10,000): when
	// reached they are sent whatever the grouping says.
	MaxPending int
	// PersistIdle is how often a cursor that only skipped alerts is
	// written (5 s).
	PersistIdle time.Duration
	Now         func() time.Time
	Logger      *slog.Logger
}

func (o *Options) defaults() {
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.RetryBackoff == nil {
		o.RetryBackoff = func(n int) time.Duration {
			d := time.Second << min(n-1, 5)
			d = min(d, 30*time.Second)
			return time.Duration(float64(d) * (0.7 + 0.6*rand.Float64()))
		}
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = 5 * time.Minute
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 10_000
	}
	if o.PersistIdle <= 0 {
		o.PersistIdle = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Dispatcher sends stored alerts to the notification plugins. Run it as a
// leader job (RunLeader): only the leader sends, from the replicated
// cursors, so every alert is sent once cluster-wide; a leader lost between
// a delivery and its cursor write makes the next leader send that batch
// again (at most one batch per notification).
type Dispatcher struct {
	o       Options
	store   Store
	apply   Applier
	configs ConfigSource
	metrics *Metrics

	mu      sync.Mutex
	active  bool
	since   time.Time
	plugins *Plugins
	live    map[string]*Live
}

// Live is what the leader knows of a notification beyond the replicated
// state.
type Live struct {
	Pending        int       `json:"pending"`
	Scanned        int64     `json:"scanned"`
	FailedAttempts int64     `json:"failed_attempts"`
	LastError      string    `json:"last_error,omitempty"`
	LastErrorAt    time.Time `json:"last_error_at,omitzero"`
}

// NewDispatcher returns a dispatcher; metrics may be nil.
func NewDispatcher(o Options, store Store, apply Applier, configs ConfigSource, metrics *Metrics) *Dispatcher {
	o.defaults()
	if metrics == nil {
		metrics = NewMetrics()
	}
	return &Dispatcher{o: o, store: store, apply: apply, configs: configs, metrics: metrics, live: map[string]*Live{}}
}

// Metrics returns the dispatcher's metrics.
func (d *Dispatcher) Metrics() *Metrics { return d.metrics }

// Active reports whether this node runs the plugins, and since when.
func (d *Dispatcher) Active() (bool, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.active, d.since
}

// LiveState returns the leader-side state of a notification.
func (d *Dispatcher) LiveState(name string) (Live, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.live[name]
	if !ok {
		return Live{}, false
	}
	return *l, true
}

// Notifier returns the running plugin of name when this node runs them.
func (d *Dispatcher) Notifier(name string) (Notifier, bool) {
	d.mu.Lock()
	p := d.plugins
	d.mu.Unlock()
	if p == nil {
		return nil, false
	}
	return p.Notifier(name)
}

var errReload = errors.New("notification configs changed")

func fingerprint(cfgs []*Config) [32]byte {
	h := sha256.New()
	for _, c := range cfgs {
		b, _ := c.ConfigureYAML(func(string) (string, bool) { return "", false })
		fmt.Fprintf(h, "%d:%s", len(b), b)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// RunLeader runs until ctx ends (leadership lost, shutdown): starts the
// plugins, dispatches, stops the plugins. A config change restarts the
// plugins with the new configs. An error makes the leader loop restart it
// after a backoff.
func (d *Dispatcher) RunLeader(ctx context.Context) error {
	for {
		cfgs, err := d.configs()
		if err != nil {
			return fmt.Errorf("notification configs: %w", err)
		}
		err = d.runConfigs(ctx, cfgs)
		if errors.Is(err, errReload) && ctx.Err() == nil {
			d.o.Logger.Info("notification configs changed: restarting the plugins")
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
}

func (d *Dispatcher) runConfigs(ctx context.Context, cfgs []*Config) error {
	fp := fingerprint(cfgs)
	var plugins *Plugins
	if len(cfgs) > 0 {
		var err error
		plugins, err = StartPlugins(ctx, d.o.Plugins, cfgs)
		if err != nil {
			return err
		}
	} else {
		plugins = &Plugins{}
	}
	d.mu.Lock()
	d.active, d.since, d.plugins = true, d.o.Now(), plugins
	d.live = map[string]*Live{}
	for _, c := range cfgs {
		d.live[c.Name] = &Live{}
	}
	d.mu.Unlock()
	d.metrics.active.Set(1)
	d.metrics.plugins.Set(float64(len(types(cfgs))))
	defer func() {
		plugins.Close()
		d.metrics.active.Set(0)
		d.metrics.plugins.Set(0)
		for _, c := range cfgs {
			d.metrics.pending.DeleteLabelValues(c.Name)
		}
		d.mu.Lock()
		d.active, d.plugins = false, nil
		d.mu.Unlock()
	}()

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, c := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.runName(rctx, c, plugins); err != nil && rctx.Err() == nil {
				cancel(err)
			}
		}()
	}
	// watch the configs
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d.o.Tick)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
			}
			now, err := d.configs()
			if err != nil {
				d.o.Logger.Warn("notification configs unreadable; keeping the running ones", "err", err)
				continue
			}
			if fingerprint(now) != fp {
				cancel(errReload)
				return
			}
		}
	}()
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return context.Cause(rctx)
}

// item is one alert waiting to be sent to one notification.
type item struct {
	a           *fsm.Alert
	noDecisions bool
}

// nameState is a notification's dispatch state while leading.
type nameState struct {
	cfg       *Config
	cursor    int64 // replicated: every alert <= cursor is handled
	pos       int64 // every alert <= pos is in pending or handled
	pending   []item
	lastSend  time.Time
	persisted time.Time
}

func (d *Dispatcher) startCursor(name string) int64 {
	if st, ok := d.store.NotifyState(name); ok {
		return st.Cursor
	}
	// a name without a cursor starts at the beginning: only alerts whose
	// profiles listed it carry its name, and none is older than this
	// feature (alerts stored by older versions carry none)
	return 0
}

func (d *Dispatcher) runName(ctx context.Context, cfg *Config, plugins *Plugins) error {
	now := d.o.Now()
	st := &nameState{cfg: cfg, lastSend: now, persisted: now}
	st.cursor = d.startCursor(cfg.Name)
	st.pos = st.cursor
	if rs, ok := d.store.NotifyState(cfg.Name); ok && rs.InFlight > rs.Cursor {
		// the previous leader announced a batch and did not record its
		// outcome: it may have been delivered, and is sent again
		d.o.Logger.Warn("notification batch in flight at the previous leader's end is sent again: the receiver may see it twice",
			"notification", cfg.Name, "first_alert_after", rs.Cursor, "last_alert", rs.InFlight)
		d.metrics.repeated.WithLabelValues(cfg.Name).Inc()
	}
	t := time.NewTicker(d.o.Tick)
	defer t.Stop()
	for {
		if err := d.step(ctx, st, plugins); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

const scanLimit = 1000

func (d *Dispatcher) scan(st *nameState) {
	for len(st.pending) < d.o.MaxPending {
		alerts := d.store.AlertsAfter(st.pos, scanLimit)
		if len(alerts) == 0 {
			return
		}
		for _, a := range alerts {
			if len(st.pending) >= d.o.MaxPending {
				return
			}
			st.pos = a.ID
			for _, n := range a.Notify {
				if n.Name == st.cfg.Name {
					st.pending = append(st.pending, item{a: a, noDecisions: n.NoDecisions})
					break // once per alert and notification
				}
			}
		}
		if len(alerts) < scanLimit {
			return
		}
	}
}

// due says whether pending alerts must be sent now, as the reference's
// plugin watcher decides: group_threshold alone waits for that many
// alerts; group_wait alone sends what is pending every group_wait; both:
// whichever comes first; neither: every tick.
func (d *Dispatcher) due(st *nameState, now time.Time) bool {
	n := len(st.pending)
	if n == 0 {
		return false
	}
	thr, wait := st.cfg.GroupThreshold, st.cfg.GroupWait
	switch {
	case n >= d.o.MaxPending:
		return true
	case thr > 0 && n >= thr:
		return true
	case wait > 0 && now.Sub(st.lastSend) >= wait:
		return true
	case thr == 0 && wait == 0:
		return true
	}
	return false
}

func (d *Dispatcher) step(ctx context.Context, st *nameState, plugins *Plugins) error {
	name := st.cfg.Name
	d.scan(st)
	d.metrics.pending.WithLabelValues(name).Set(float64(len(st.pending)))
	d.setLive(name, func(l *Live) { l.Pending = len(st.pending); l.Scanned = st.pos })
	now := d.o.Now()
	if !d.due(st, now) {
		// only skipped alerts: persist the position now and then so a
		// successor does not rescan them
		if len(st.pending) == 0 && st.pos > st.cursor && now.Sub(st.persisted) >= d.o.PersistIdle {
			if err := d.advance(ctx, fsm.NotifyCursor{Name: name, Cursor: st.pos}); err != nil {
				return err
			}
			st.cursor, st.persisted = st.pos, now
		}
		return nil
	}
	if plugins.Exited(name) {
		return fmt.Errorf("notification plugin of %s (type %s) exited", name, st.cfg.Type)
	}
	n, ok := plugins.Notifier(name)
	if !ok {
		return fmt.Errorf("notification %s: no plugin running", name)
	}
	size := max(st.cfg.GroupThreshold, 1)
	for len(st.pending) > 0 {
		chunk := st.pending[:min(size, len(st.pending))]
		last := chunk[len(chunk)-1].a.ID
		if len(chunk) == len(st.pending) {
			last = st.pos // everything scanned is handled after this chunk
		}
		adv := fsm.NotifyCursor{Name: name, Cursor: last}
		// announce the batch, so a successor can tell a repeat
		if err := d.advance(ctx, fsm.NotifyCursor{Name: name, Cursor: st.cursor, InFlight: last}); err != nil {
			return fmt.Errorf("notification %s: cursor: %w", name, err)
		}
		err := d.deliver(ctx, st.cfg, n, chunk)
		switch {
		case err == nil:
			adv.Sent, adv.Batches = int64(len(chunk)), 1
			d.metrics.sent.WithLabelValues(name).Add(float64(len(chunk)))
			d.metrics.batches.WithLabelValues(name).Inc()
		case ctx.Err() != nil:
			return ctx.Err() // not lost: the next leader sends it
		default:
			adv.Lost, adv.Error = int64(len(chunk)), truncate(err.Error(), 1000)
			d.metrics.lost.WithLabelValues(name).Add(float64(len(chunk)))
			d.o.Logger.Error("notification lost after retries", "notification", name, "alerts", len(chunk),
				"first_alert", chunk[0].a.ID, "last_alert", chunk[len(chunk)-1].a.ID, "err", err)
		}
		if err := d.advance(ctx, adv); err != nil {
			// the batch was handled but the cursor did not move: the
			// next run (here or on the next leader) repeats this batch
			return fmt.Errorf("notification %s: cursor: %w", name, err)
		}
		st.cursor = last
		st.pending = st.pending[len(chunk):]
		d.o.Logger.Debug("notification batch handled", "notification", name, "alerts", len(chunk), "cursor", last)
	}
	st.pending = nil
	st.lastSend, st.persisted = d.o.Now(), d.o.Now()
	d.metrics.pending.WithLabelValues(name).Set(0)
	d.setLive(name, func(l *Live) { l.Pending = 0 })
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func (d *Dispatcher) advance(ctx context.Context, c fsm.NotifyCursor) error {
	res, err := d.apply.Apply(ctx, fsm.Command{Type: fsm.CmdNotifyCursor, Body: c})
	if err != nil {
		return err
	}
	if res != nil && res.Code != fsm.CodeOK {
		return fmt.Errorf("cursor write refused: %s", res.Message)
	}
	return nil
}

func (d *Dispatcher) setLive(name string, fn func(*Live)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	l, ok := d.live[name]
	if !ok {
		l = &Live{}
		d.live[name] = l
	}
	fn(l)
}

// Models builds the alerts a chunk is formatted from.
func (d *Dispatcher) models(chunk []item) []*models.Alert {
	out := make([]*models.Alert, 0, len(chunk))
	for _, it := range chunk {
		out = append(out, AlertModel(it.a, d.store.AlertDecisions(it.a), it.noDecisions))
	}
	return out
}

// deliver formats a chunk and sends it, retrying as the config says:
// max_retry more attempts, or for up to 5 minutes without max_retry.
func (d *Dispatcher) deliver(ctx context.Context, cfg *Config, n Notifier, chunk []item) error {
	text, err := cfg.Render(d.models(chunk))
	if err != nil {
		return fmt.Errorf("format alerts for notification: %w", err)
	}
	return d.send(ctx, cfg, n, text)
}

func (d *Dispatcher) send(ctx context.Context, cfg *Config, n Notifier, text string) error {
	start := d.o.Now()
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err := n.Notify(actx, &Notification{Text: text, Name: cfg.Name})
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d.metrics.failedAttempts.WithLabelValues(cfg.Name).Inc()
		d.setLive(cfg.Name, func(l *Live) {
			l.FailedAttempts++
			l.LastError, l.LastErrorAt = truncate(err.Error(), 1000), d.o.Now()
		})
		if cfg.MaxRetry > 0 && uint(attempt) > cfg.MaxRetry {
			return err
		}
		wait := d.o.RetryBackoff(attempt)
		if cfg.MaxRetry == 0 && d.o.Now().Add(wait).Sub(start) > d.o.MaxElapsed {
			return err
		}
		d.o.Logger.Warn("notify attempt failed", "notification", cfg.Name, "attempt", attempt, "next", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Test formats a sample alert with name's format and sends it through n
// (what `cscli notifications test` does). It does not retry.
func Test(ctx context.Context, cfg *Config, n Notifier, alert *models.Alert) error {
	text, err := cfg.Render([]*models.Alert{alert})
	if err != nil {
		return fmt.Errorf("format alerts for notification: %w", err)
	}
	tctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	return n.Notify(tctx, &Notification{Text: text, Name: cfg.Name})
}

// Names returns the names of cfgs, sorted.
func Names(cfgs []*Config) []string {
	out := make([]string, 0, len(cfgs))
	for _, c := range cfgs {
		out = append(out, c.Name)
	}
	sort.Strings(out)
	return out
}

// PluginPIDs returns the process IDs of the plugins this node runs.
func (d *Dispatcher) PluginPIDs() []int {
	d.mu.Lock()
	p := d.plugins
	d.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.PIDs()
}
