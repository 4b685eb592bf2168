package main

import "github.com/prometheus/client_golang/prometheus"

// csInfo is CrowdSec's cs_info gauge (always 1, the version as a constant
// label), which CrowdSec's dashboards read; here the version is halapi's.
func csInfo() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "cs_info", Help: "Information about Crowdsec.",
		ConstLabels: prometheus.Labels{"version": currentBuild().Version}})
	g.Set(1)
	return g
}
