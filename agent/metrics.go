package agent

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the agent's Prometheus collectors (its own registry, served
// on its own metrics listener). Node labels are scheme://host:port.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	failovers *prometheus.CounterVec
	healthy   *prometheus.GaugeVec
	rttG      *prometheus.GaugeVec
	latency   prometheus.Histogram
	// reqCounters caches requests' children by (node, code).
	reqCounters sync.Map
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_agent_requests_total",
			Help: "Client requests by the node that answered (empty: none did) and status code."}, []string{"node", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_agent_retries_total",
			Help: "Attempts moved away from a node, by reason (refused, connection, timeout, node_down, status_5xx)."}, []string{"node", "reason"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_agent_failovers_total",
			Help: "Changes of the preferred node because it went down."}, []string{"from", "to"}),
		healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "halapi_agent_node_healthy",
			Help: "1 if the node's last health check succeeded."}, []string{"node"}),
		rttG: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "halapi_agent_node_rtt_seconds",
			Help: "Moving average of the node's /health round trip."}, []string{"node"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "halapi_agent_request_duration_seconds",
			Help: "Client requests, end to end through the agent, retries included.", Buckets: prometheus.DefBuckets}),
	}
	m.reg.MustRegister(m.requests, m.retries, m.failovers, m.healthy, m.rttG, m.latency)
	return m
}

func (m *metrics) nodeKnown(n *node) { m.healthy.WithLabelValues(n.key).Set(0) }
func (m *metrics) nodeGone(n *node) {
	m.healthy.DeleteLabelValues(n.key)
	m.rttG.DeleteLabelValues(n.key)
}

func (m *metrics) health(n *node, up bool) {
	v := 0.0
	if up {
		v = 1
	}
	m.healthy.WithLabelValues(n.key).Set(v)
}

func (m *metrics) setRTT(n *node, ns int64) {
	m.rttG.WithLabelValues(n.key).Set(float64(ns) / 1e9)
}

func (m *metrics) failover(from, to *node) { m.failovers.WithLabelValues(from.key, to.key).Inc() }
func (m *metrics) retry(n *node, reason string) {
	m.retries.WithLabelValues(n.key, reason).Inc()
}

type reqKey struct {
	node string
	code int
}

func (m *metrics) request(node string, code int, d time.Duration) {
	k := reqKey{node, code}
	c, ok := m.reqCounters.Load(k)
	if !ok {
		c, _ = m.reqCounters.LoadOrStore(k, m.requests.WithLabelValues(node, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
	m.latency.Observe(d.Seconds())
}

// NodeStatus is one node in `halapi agent status`.
type NodeStatus struct {
	URL       string    `json:"url"`
	ID        string    `json:"id,omitempty"`
	Healthy   bool      `json:"healthy"`
	Preferred bool      `json:"preferred"`
	Static    bool      `json:"static"` // from --server
	RTTMillis float64   `json:"rtt_ms"`
	Requests  int64     `json:"requests"`
	Errors    int64     `json:"errors"`
	Retries   int64     `json:"retries"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
}

// Status is what the agent's /status answers.
type Status struct {
	Preferred string       `json:"preferred"`
	Failovers int64        `json:"failovers"`
	Retries   int64        `json:"retries"`
	Nodes     []NodeStatus `json:"nodes"`
	// Identity is the certificate presented for certificate clients.
	Identity *IdentityStatus `json:"identity,omitempty"`
	Recent   []RequestRecord `json:"recent"`
}

// IdentityStatus describes the agent's identity certificate.
type IdentityStatus struct {
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	Renewals int64     `json:"renewals"`
}

// Status returns a snapshot of the agent's view.
func (a *Agent) Status() Status {
	st := Status{Preferred: a.Preferred(), Failovers: a.failovers.Load(), Retries: a.retries.Load(), Recent: a.recent.list()}
	if c := a.identity(); c != nil && len(c.Certificate) > 0 {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
			st.Identity = &IdentityStatus{Subject: leaf.Subject.CommonName, Serial: leaf.SerialNumber.String(),
				NotAfter: leaf.NotAfter.UTC(), Renewals: a.identityRenewals.Load()}
		}
	}
	a.mu.RLock()
	for _, n := range a.nodes {
		ns := NodeStatus{URL: n.key, Healthy: n.healthy.Load(), Preferred: n == a.preferred, Static: n.static,
			RTTMillis: float64(n.rtt.Load()) / 1e6, Requests: n.requests.Load(), Errors: n.errors.Load(),
			Retries: n.retries.Load(), Since: time.Unix(0, n.since.Load()).UTC()}
		if id := n.id.Load(); id != nil {
			ns.ID = *id
		}
		if e := n.lastErr.Load(); e != nil {
			ns.LastError = *e
		}
		st.Nodes = append(st.Nodes, ns)
	}
	a.mu.RUnlock()
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].URL < st.Nodes[j].URL })
	return st
}

// StatusPath is the agent's status route on its metrics listener.
const StatusPath = "/status"

// MetricsHandler serves /metrics (Prometheus) and /status (JSON) for the
// agent's own metrics listener (loopback by default).
func (a *Agent) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc(StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		b, err := json.Marshal(a.Status())
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	return mux
}
