package notify

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the dispatcher's Prometheus metrics (rows in docs/metrics.md).
type Metrics struct {
	sent, batches, lost, failedAttempts, repeated *prometheus.CounterVec
	pending                                       *prometheus.GaugeVec
	active, plugins                               prometheus.Gauge
}

// NewMetrics creates the metrics (register them with Collectors).
func NewMetrics() *Metrics {
	return &Metrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_notifications_sent_total",
			Help: "Alerts delivered to a notification plugin by this node (as leader)."}, []string{"notification"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_notifications_batches_total",
			Help: "Notify calls that delivered a batch of alerts."}, []string{"notification"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_notifications_lost_total",
			Help: "Alerts given up after max_retry failed attempts (or 5 minutes)."}, []string{"notification"}),
		failedAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_notifications_failed_attempts_total",
			Help: "Notify calls that failed (each retry counts)."}, []string{"notification"}),
		repeated: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "halapi_notifications_repeated_batches_total",
			Help: "Batches a previous leader announced without recording their outcome, sent again by this node."}, []string{"notification"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "halapi_notifications_pending",
			Help: "Alerts waiting for grouping or delivery."}, []string{"notification"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "halapi_notifications_active",
			Help: "1 where the notification plugins run (the leader)."}),
		plugins: prometheus.NewGauge(prometheus.GaugeOpts{Name: "halapi_notifications_plugins_running",
			Help: "Notification plugin processes running on this node."}),
	}
}

// Collectors returns every metric, to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.sent, m.batches, m.lost, m.failedAttempts, m.repeated, m.pending, m.active, m.plugins}
}
