package capi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/prometheus/client_golang/prometheus"
)

// MetricsPayloadFor builds POST v3/metrics/ from the replicated state.
func MetricsPayloadFor(f *fsm.FSM, version string) MetricsPayload {
	p := MetricsPayload{ApilVersion: version, Machines: []MetricsMachine{}, Bouncers: []MetricsBouncer{}}
	for _, m := range f.Machines() {
		lastPush := time.Time{}.Format(time.RFC3339)
		if m.LastPush != 0 {
			lastPush = rfc3339(m.LastPush)
		}
		p.Machines = append(p.Machines, MetricsMachine{Name: m.ID, Version: m.Version, LastUpdate: rfc3339(m.UpdatedAt),
			LastPush: lastPush})
	}
	for _, b := range f.Bouncers() {
		lastPull := ""
		if b.LastPull != 0 {
			lastPull = rfc3339(b.LastPull)
		}
		p.Bouncers = append(p.Bouncers, MetricsBouncer{CustomName: b.Name, Name: b.Type, Version: b.Version, LastPull: lastPull})
	}
	return p
}

func machineIDs(f *fsm.FSM) []string {
	ms := f.Machines()
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// metricsLoop: first send at once, the second after interval ± jitter,
// then every interval; a change of the machine set sends at once.
func (s *Service) metricsLoop(ctx context.Context, cl *Client) {
	check := time.NewTicker(s.cfg.MetricsCheckInterval)
	defer check.Stop()
	t := time.NewTimer(time.Millisecond)
	defer t.Stop()
	ids := machineIDs(s.f)
	sent := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-check.C:
			if now := machineIDs(s.f); !slices.Equal(now, ids) {
				ids = now
				s.log.Info("machines changed: sending CAPI metrics now")
				t.Reset(time.Millisecond)
			}
			continue
		case <-t.C:
		}
		p := MetricsPayloadFor(s.f, s.cfg.Version)
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		_, err := cl.Do(rctx, epMetrics, http.MethodPost, "v3/metrics/", nil, p, nil)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.noteErr("metrics", err)
		} else {
			s.noteOK("metrics")
		}
		sent++
		if sent == 1 {
			t.Reset(jittered(s.cfg.MetricsInterval, s.cfg.MetricsJitter))
		} else {
			t.Reset(s.cfg.MetricsInterval)
		}
	}
}

var (
	osOnce                  sync.Once
	osName, osVer, osFamily string
)

// detectOS reads /etc/os-release (name and version), else the Go platform.
func detectOS() (name, family, version string) {
	osOnce.Do(func() {
		osName, osFamily, osVer = runtime.GOOS, runtime.GOOS, "?"
		fh, err := os.Open("/etc/os-release")
		if err != nil {
			return
		}
		defer fh.Close()
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if !ok {
				continue
			}
			v = strings.Trim(v, `"'`)
			switch k {
			case "ID":
				osName = v
			case "VERSION_ID":
				osVer = v
			case "ID_LIKE":
				osFamily = v
			}
		}
	})
	return osName, osFamily, osVer
}

func splitFlags(s string) []string {
	out := []string{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func rawOrEmpty(b []byte) any {
	if len(b) == 0 || string(b) == "null" {
		return map[string]any{}
	}
	return json.RawMessage(b)
}

// UsagePayloadFor builds POST v3/usage-metrics: one entry per bouncer
// and machine, each with the metrics it sent that were not forwarded yet
// (as CrowdSec does; a component sends every 30 min by default), and the
// LAPI's own entry. marks are what to mark as forwarded once the Central
// API accepted the payload.
func UsagePayloadFor(f *fsm.FSM, cfg *Config, started, now time.Time) (p UsageMetricsPayload, marks []fsm.UsageMark) {
	p = UsageMetricsPayload{RemediationComponents: []UsageComponent{}, LogProcessors: []UsageComponent{}}
	pending := func(kind, name string, rs []fsm.UsageRecord) []any {
		out := []any{}
		var upTo int64
		for _, r := range fsm.Unsent(rs) {
			var items []json.RawMessage
			if err := json.Unmarshal(r.Metrics, &items); err == nil {
				for _, it := range items {
					out = append(out, it)
				}
			}
			upTo = max(upTo, r.ReceivedAt)
		}
		if upTo != 0 {
			marks = append(marks, fsm.UsageMark{Kind: kind, Name: name, UpTo: upTo})
		}
		return out
	}
	for _, b := range f.Bouncers() {
		c := UsageComponent{Name: b.Name, Type: b.Type, Version: b.Version,
			OS:           &UsageOS{Name: b.OSName, Version: b.OSVersion},
			FeatureFlags: splitFlags(b.FeatureFlags), UtcStartupTimestamp: b.CreatedAt / 1e9,
			Metrics: pending(fsm.UsageRemediation, b.Name, b.Usage)}
		if b.LastPull != 0 {
			c.LastPull = b.LastPull / 1e9
		}
		p.RemediationComponents = append(p.RemediationComponents, c)
	}
	for _, m := range f.Machines() {
		c := UsageComponent{Name: m.ID, Version: m.Version, OS: &UsageOS{Name: m.OSName, Version: m.OSVersion},
			FeatureFlags: splitFlags(m.FeatureFlags), UtcStartupTimestamp: m.CreatedAt / 1e9,
			Metrics:    pending(fsm.UsageLogProcessor, m.ID, m.Usage),
			LastUpdate: m.UpdatedAt / 1e9, Datasources: rawOrEmpty(m.Datasources), HubItems: rawOrEmpty(m.HubState)}
		if m.LastPush != 0 {
			c.LastPush = m.LastPush / 1e9
		}
		p.LogProcessors = append(p.LogProcessors, c)
	}
	name, family, version := detectOS()
	opts := []string{strings.Join(cfg.Console.Enabled(), ",")}
	p.Lapi = &UsageComponent{Version: cfg.Version, OS: &UsageOS{Name: name, Family: family, Version: version},
		FeatureFlags: []string{}, UtcStartupTimestamp: started.Unix(), ConsoleOptions: opts,
		Metrics: []any{UsageDetailed{Meta: UsageMeta{UtcNowTimestamp: now.Unix(),
			WindowSizeSeconds: int64(cfg.MetricsInterval.Seconds())}, Items: []any{}}}}
	return p, marks
}

// usageMetricsLoop: first after interval ± jitter, then every interval.
// A 2xx or 422 answer counts as sent; other failures are retried on the
// next run.
func (s *Service) usageMetricsLoop(ctx context.Context, cl *Client) {
	t := time.NewTimer(jittered(s.cfg.UsageMetricsInterval, s.cfg.UsageMetricsJitter))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(s.cfg.UsageMetricsInterval)
		p, marks := UsagePayloadFor(s.f, &s.cfg, s.started, s.cfg.Now())
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
		_, err := cl.Do(rctx, epUsageMetrics, http.MethodPost, "v3/usage-metrics", nil, p, nil)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil && StatusOf(err) != http.StatusUnprocessableEntity {
			s.noteErr("usage_metrics", err)
			continue
		}
		if err != nil {
			s.log.Warn("CAPI refused the usage metrics (422): counted as sent", "err", err)
		}
		s.noteOK("usage_metrics")
		if len(marks) > 0 {
			if _, err := s.apply(ctx, fsm.CmdUsageSent, fsm.UsageSent{Marks: marks}); err != nil && ctx.Err() == nil {
				// sent again next time: CrowdSec does the same when it
				// cannot mark them
				s.log.Warn("usage metrics sent but not marked as sent", "err", err)
			}
		}
	}
}

// collector holds the service's Prometheus metrics.
type collector struct {
	s           *Service
	requests    *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	signals     prometheus.Counter
	leader      prometheus.Gauge
	streak      prometheus.Gauge
	decisions   *prometheus.Desc

	mu       sync.Mutex
	countsAt time.Time
	counts   map[string]int
}

func newCollector(s *Service) *collector {
	return &collector{
		s: s,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_capi_requests_total",
			Help: "Calls to the Central API by endpoint and result (ok, not_modified, network_error, canceled or the HTTP status)."},
			[]string{"endpoint", "result"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "halapi_capi_last_success_timestamp_seconds",
			Help: "Unix time of the last successful CAPI operation on this node (push, pull, metrics, usage_metrics)."},
			[]string{"operation"}),
		signals: prometheus.NewCounter(prometheus.CounterOpts{Name: "halapi_capi_signals_pushed_total",
			Help: "Signals accepted by the Central API from this node."}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "halapi_capi_active",
			Help: "1 when the CAPI loops run on this node (the raft leader)."}),
		streak: prometheus.NewGauge(prometheus.GaugeOpts{Name: "halapi_capi_failure_streak",
			Help: "Consecutive failed CAPI operations (0 when the last one succeeded)."}),
		decisions: prometheus.NewDesc("halapi_capi_decisions",
			"Active decisions that came from the Central API, by origin (CAPI = community blocklist, lists = third-party blocklists).",
			[]string{"origin"}, nil),
	}
}

func (c *collector) observe(endpoint, result string) {
	c.requests.WithLabelValues(endpoint, result).Inc()
}

func (c *collector) invalidateDecisions() {
	c.mu.Lock()
	c.countsAt = time.Time{}
	c.mu.Unlock()
}

// decisionCounts counts active pulled decisions (cached 30 s: a scrape
// must stay cheap with a large blocklist).
func (c *collector) decisionCounts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.s.cfg.Now()
	if c.counts != nil && now.Sub(c.countsAt) < 30*time.Second {
		return c.counts
	}
	counts := map[string]int{OriginCAPI: 0, OriginLists: 0}
	for _, d := range c.s.f.Decisions(&fsm.DecisionFilter{Origins: []string{OriginCAPI, OriginLists}}, now) {
		counts[d.Origin]++
	}
	c.counts, c.countsAt = counts, now
	return counts
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	c.requests.Describe(ch)
	c.lastSuccess.Describe(ch)
	c.signals.Describe(ch)
	c.leader.Describe(ch)
	c.streak.Describe(ch)
	ch <- c.decisions
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.requests.Collect(ch)
	c.lastSuccess.Collect(ch)
	c.signals.Collect(ch)
	c.leader.Collect(ch)
	c.streak.Collect(ch)
	for origin, n := range c.decisionCounts() {
		ch <- prometheus.MustNewConstMetric(c.decisions, prometheus.GaugeValue, float64(n), origin)
	}
}

// Collector returns the service's Prometheus collector.
func (s *Service) Collector() prometheus.Collector { return s.metrics }
