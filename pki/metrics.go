package pki

import (
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports the expiries a cluster's operator watches: the root
// and intermediate CA, this node's certificate (renewed at two thirds of
// its life: a not_after closer than a third of the lifetime means renewal
// is failing), and the issued agent/bouncer certificates by state.
type collector struct {
	rt       *Runtime
	notAfter *prometheus.Desc
	issued   *prometheus.Desc
}

// expiringWithin: an issued certificate this close to its end is
// "expiring".
const expiringWithin = 7 * 24 * time.Hour

// Collector is the node's PKI metrics (halapi_pki_*, docs/metrics.md).
func (rt *Runtime) Collector() prometheus.Collector {
	return &collector{rt: rt,
		notAfter: prometheus.NewDesc("halapi_pki_cert_not_after_timestamp_seconds",
			"End of validity (unix seconds) of the cluster CA certificates and of this node's certificate.", []string{"cert"}, nil),
		issued: prometheus.NewDesc("halapi_pki_issued_certificates",
			"Certificates issued by the cluster CA, by role (node, agent, bouncer) and state (valid, expiring within 7 days, expired, revoked).",
			[]string{"role", "state"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.notAfter
	ch <- c.issued
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ts := func(cert string, t time.Time) {
		ch <- prometheus.MustNewConstMetric(c.notAfter, prometheus.GaugeValue, float64(t.Unix()), cert)
	}
	c.rt.mu.Lock()
	r := c.rt.renewer
	c.rt.mu.Unlock()
	if r != nil {
		if cur := r.Current(); cur != nil && len(cur.Certificate) > 0 {
			if leaf, err := x509.ParseCertificate(cur.Certificate[0]); err == nil {
				ts("node", leaf.NotAfter)
			}
		}
	}
	ca := c.rt.CA()
	if ca == nil {
		return
	}
	if root := ca.Root(); root != nil {
		ts("root", root.NotAfter)
	}
	if in := ca.Intermediate(); in != nil {
		ts("intermediate", in.NotAfter)
	}
	now := time.Now()
	counts := map[[2]string]int{}
	for _, ci := range ca.List() {
		st := "valid"
		switch {
		case ci.Revoked:
			st = "revoked"
		case now.After(ci.NotAfter):
			st = "expired"
		case ci.NotAfter.Sub(now) < expiringWithin:
			st = "expiring"
		}
		role := string(ci.Role)
		if role == "" {
			role = "other"
		}
		counts[[2]string{role, st}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.issued, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}
