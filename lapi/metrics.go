package lapi

import (
	"net/http"
	"sync"
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
	// refusals of anonymous clients, by reason (never by machine id: the
	// client chooses it)
	loginFailures *prometheus.CounterVec
	regRefused    *prometheus.CounterVec
	connRefused   *prometheus.CounterVec
	// bouncerCounters caches the per-bouncer counters (a label lookup
	// per poll otherwise).
	bouncerCounters sync.Map
}

func newMetrics(f *fsm.FSM) *Metrics {
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
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}},
			[]string{"endpoint", "method"}),
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
	m.Registry.MustRegister(m.route, m.machine, m.bouncer, m.latency, m.alerts, m.loginFailures, m.regRefused, m.connRefused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&stateCollector{f: f,
			active: prometheus.NewDesc("cs_active_decisions", "Number of active decisions.", nil, nil),
			total:  prometheus.NewDesc("halapi_stored_decisions", "Number of stored decisions (active and expired).", nil, nil),
			alerts: prometheus.NewDesc("cs_alerts", "Number of stored alerts.", nil, nil),
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
	known := map[string]pair{}
	for _, meth := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete} {
		known[meth] = pair{m.route.WithLabelValues(route, meth), m.latency.WithLabelValues(route, meth)}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		p, ok := known[r.Method]
		if !ok {
			p = pair{m.route.WithLabelValues(route, r.Method), m.latency.WithLabelValues(route, r.Method)}
		}
		p.count.Inc()
		h(w, r)
		p.lat.Observe(time.Since(start).Seconds())
	})
}

func routeOf(r *http.Request) string {
	if cr := mux.CurrentRoute(r); cr != nil {
		if t, err := cr.GetPathTemplate(); err == nil {
			return t
		}
	}
	return r.URL.Path
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

func (m *Metrics) alertsReceived(machine string, n int) {
	m.alerts.WithLabelValues(machine).Add(float64(n))
}

func (m *Metrics) loginFailed(reason string) { m.loginFailures.WithLabelValues(reason).Inc() }

func (m *Metrics) registrationRefused(reason string) { m.regRefused.WithLabelValues(reason).Inc() }

// ConnectionRefused counts a connection closed by LimitListener.
func (m *Metrics) ConnectionRefused(reason string) { m.connRefused.WithLabelValues(reason).Inc() }

type stateCollector struct {
	f                     *fsm.FSM
	active, total, alerts *prometheus.Desc
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.active
	ch <- c.total
	ch <- c.alerts
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	alerts, active, total := c.f.Counts(time.Now())
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(total))
	ch <- prometheus.MustNewConstMetric(c.alerts, prometheus.GaugeValue, float64(alerts))
}
