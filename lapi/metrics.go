package lapi

import (
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/fsm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the Prometheus collectors of one node, under CrowdSec's
// names where CrowdSec has them.
type Metrics struct {
	Registry *prometheus.Registry
	route    *prometheus.CounterVec
	machine  *prometheus.CounterVec
	bouncer  *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	alerts   *prometheus.CounterVec
	// decisionsOK/KO count GET /v1/decisions answers with and without
	// decisions, per bouncer (CrowdSec's cs_lapi_decisions_ok/ko_total).
	decisionsOK *prometheus.CounterVec
	decisionsKO *prometheus.CounterVec
	// refusals of anonymous clients, by reason (never by machine id: the
	// client chooses it)
	loginFailures *prometheus.CounterVec
	regRefused    *prometheus.CounterVec
	connRefused   *prometheus.CounterVec
	// bouncerCounters caches the per-bouncer counters (a label lookup
	// per poll otherwise).
	bouncerCounters sync.Map
	// decisionCounters caches the ko/ok counters of each bouncer.
	decisionCounters sync.Map
}

func newMetrics(f *fsm.FSM, now func() time.Time) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		route: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cs_lapi_route_requests_total",
			Help: "Number of calls to each route per method."}, []string{"route", "method"}),
		machine: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cs_lapi_machine_requests_total",
			Help: "Number of calls for each machine."}, []string{"machine", "route", "method"}),
		bouncer: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cs_lapi_bouncer_requests_total",
			Help: "Number of calls for each bouncer."}, []string{"bouncer", "route", "method"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cs_lapi_request_duration_seconds",
			Help:    "Response time of LAPI.",
			Buckets: latencyBuckets}, []string{"endpoint", "method"}),
		decisionsOK: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cs_lapi_decisions_ok_total",
			Help: "Number of calls to /decisions that returned non-nil result."}, []string{"bouncer"}),
		decisionsKO: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cs_lapi_decisions_ko_total",
			Help: "Number of calls to /decisions that returned nil result."}, []string{"bouncer"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_alerts_received_total",
			Help: "Alerts stored, per machine."}, []string{"machine"}),
		loginFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_login_failures_total",
			Help: "Refused password logins, by reason (unknown_machine, wrong_password, tls_machine, invalid, throttled)."},
			[]string{"reason"}),
		regRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_registrations_refused_total",
			Help: "Refused machine registrations, by reason (invalid, rate, pending_cap)."}, []string{"reason"}),
		connRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_connections_refused_total",
			Help: "API connections closed at accept because a cap was reached (total, per_ip)."}, []string{"reason"}),
	}
	m.Registry.MustRegister(m.route, m.machine, m.bouncer, m.latency, m.alerts, m.decisionsOK, m.decisionsKO, m.loginFailures, m.regRefused, m.connRefused,
		// The default Go metrics plus the scheduler's histograms:
		// go_sched_latencies_seconds (runnable -> running) and
		// go_sched_pauses_*_seconds (stop-the-world pauses), what tells a
		// node that waits for CPU from one whose handlers are slow.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{f: f, now: now,
			active: prometheus.NewDesc("cs_active_decisions", "Number of active decisions.",
				[]string{"reason", "origin", "action"}, nil),
			total:  prometheus.NewDesc("halapi_stored_decisions", "Number of stored decisions (active and expired).", nil, nil),
			alerts: prometheus.NewDesc("cs_alerts", "Number of alerts (excluding CAPI).", []string{"reason"}, nil),
			stored: prometheus.NewDesc("halapi_stored_alerts", "Number of stored alerts (CAPI and blocklist alerts included).", nil, nil),
		})
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

// instrument counts and times a route. The collectors of the common
// methods are resolved once, not looked up by label on every request.
func (m *Metrics) instrument(route string, h http.HandlerFunc) http.Handler {
	type pair struct {
		count prometheus.Counter
		lat   prometheus.Observer
	}
	// one slot per known method and one for any other (the client
	// chooses the method: it is not a label value); a slot is resolved on
	// first use, so only methods seen have a series
	var slots [len(knownMethods) + 1]atomic.Pointer[pair]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		i := slices.Index(knownMethods[:], r.Method)
		if i < 0 {
			i = len(knownMethods)
		}
		p := slots[i].Load()
		if p == nil {
			meth := otherMethod
			if i < len(knownMethods) {
				meth = knownMethods[i]
			}
			p = &pair{m.route.WithLabelValues(route, meth), m.latency.WithLabelValues(route, meth)}
			slots[i].Store(p)
		}
		p.count.Inc()
		h(w, r)
		p.lat.Observe(time.Since(start).Seconds())
	})
}

// latencyBuckets holds CrowdSec's buckets (0.005 … 1 s) and halapi's
// finer and longer ones, so a dashboard that reads a given le finds it.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 2.5}

var knownMethods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete, http.MethodPut,
	http.MethodPatch, http.MethodOptions}

// otherMethod labels requests whose method is none of knownMethods.
const otherMethod = "OTHER"

// invalidEndpoint is the route label of requests no route matches
// (CrowdSec's label for them).
const invalidEndpoint = "invalid-endpoint"

// notFound counts a request no route matched, under one route label and
// a bounded method label, and answers 404.
func (m *Metrics) notFound(w http.ResponseWriter, r *http.Request) {
	meth := otherMethod
	if slices.Contains(knownMethods[:], r.Method) {
		meth = r.Method
	}
	m.route.WithLabelValues(invalidEndpoint, meth).Inc()
	w.WriteHeader(http.StatusNotFound)
}

// routeOf is the route label of a matched request: the gin-style template
// CrowdSec reports ("/v1/alerts/:alert_id"), never the raw path.
func routeOf(r *http.Request) string {
	if cr := mux.CurrentRoute(r); cr != nil {
		if t, err := cr.GetPathTemplate(); err == nil {
			if strings.Contains(t, "{") {
				t = ginTemplate(t)
			}
			return t
		}
	}
	// routes without variables are served before the router; their path
	// is one of the registered ones
	if strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.RawPath == "" {
		return r.URL.Path
	}
	return invalidEndpoint
}

// ginTemplate turns "/v1/alerts/{alert_id}" into "/v1/alerts/:alert_id".
func ginTemplate(t string) string {
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case '{':
			b.WriteByte(':')
		case '}':
		default:
			b.WriteByte(t[i])
		}
	}
	return b.String()
}

func (m *Metrics) machineRequest(id string, r *http.Request) {
	m.machine.WithLabelValues(id, routeOf(r), r.Method).Inc()
}

func (m *Metrics) bouncerRequest(name string, r *http.Request) {
	key := bouncerKey{name, routeOf(r), r.Method}
	if c, ok := m.bouncerCounters.Load(key); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := m.bouncer.WithLabelValues(key.name, key.route, key.method)
	m.bouncerCounters.Store(key, c)
	c.Inc()
}

type bouncerKey struct{ name, route, method string }

// decisionsAnswered counts a GET /v1/decisions answer for a bouncer.
func (m *Metrics) decisionsAnswered(bouncer string, n int) {
	c, ok := m.decisionCounters.Load(bouncer)
	if !ok {
		c, _ = m.decisionCounters.LoadOrStore(bouncer, &[2]prometheus.Counter{
			m.decisionsKO.WithLabelValues(bouncer), m.decisionsOK.WithLabelValues(bouncer)})
	}
	pair := c.(*[2]prometheus.Counter)
	if n > 0 {
		pair[1].Inc()
	} else {
		pair[0].Inc()
	}
}

func (m *Metrics) alertsReceived(machine string, n int) {
	m.alerts.WithLabelValues(machine).Add(float64(n))
}

func (m *Metrics) loginFailed(reason string) { m.loginFailures.WithLabelValues(reason).Inc() }

func (m *Metrics) registrationRefused(reason string) { m.regRefused.WithLabelValues(reason).Inc() }

// ConnectionRefused counts a connection closed by LimitListener.
func (m *Metrics) ConnectionRefused(reason string) { m.connRefused.WithLabelValues(reason).Inc() }

type stateCollector struct {
	f                             *fsm.FSM
	now                           func() time.Time
	active, total, alerts, stored *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.active
	ch <- c.total
	ch <- c.alerts
	ch <- c.stored
}

// maxLabelSets bounds the series of cs_active_decisions and cs_alerts:
// scenarios come from agents and blocklists, so the largest groups are
// reported and the rest summed under the reason "other".
const maxLabelSets = 500

// otherReason is the reason label of the groups beyond maxLabelSets.
const otherReason = "other"

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	mc := c.f.MetricCounts(c.now())
	type group struct {
		g fsm.DecisionGroup
		n int
	}
	groups := make([]group, 0, len(mc.ActiveBy))
	for g, n := range mc.ActiveBy {
		groups = append(groups, group{g, n})
	}
	sort.Slice(groups, func(i, j int) bool {
		if groups[i].n != groups[j].n {
			return groups[i].n > groups[j].n
		}
		a, b := groups[i].g, groups[j].g
		return a.Scenario+"\x00"+a.Origin+"\x00"+a.Type < b.Scenario+"\x00"+b.Origin+"\x00"+b.Type
	})
	other := 0
	for i, g := range groups {
		if i >= maxLabelSets-1 && len(groups) > maxLabelSets {
			other += g.n
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(g.n), g.g.Scenario, g.g.Origin, g.g.Type)
	}
	if other > 0 {
		ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(other), otherReason, otherReason, otherReason)
	}
	type scen struct {
		s string
		n int
	}
	scens := make([]scen, 0, len(mc.AlertsBy))
	for s, n := range mc.AlertsBy {
		scens = append(scens, scen{s, n})
	}
	sort.Slice(scens, func(i, j int) bool {
		if scens[i].n != scens[j].n {
			return scens[i].n > scens[j].n
		}
		return scens[i].s < scens[j].s
	})
	other = 0
	for i, s := range scens {
		if i >= maxLabelSets-1 && len(scens) > maxLabelSets {
			other += s.n
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.alerts, prometheus.GaugeValue, float64(s.n), s.s)
	}
	if other > 0 {
		ch <- prometheus.MustNewConstMetric(c.alerts, prometheus.GaugeValue, float64(other), otherReason)
	}
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(mc.Total))
	ch <- prometheus.MustNewConstMetric(c.stored, prometheus.GaugeValue, float64(mc.Alerts))
}
