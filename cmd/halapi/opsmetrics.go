package main

import "github.com/prometheus/client_golang/prometheus"

// metricsHook, when set (tests), receives the node's registry once every
// collector is registered.
var metricsHook func(*prometheus.Registry)

// registerOpsMetrics registers the PKI collector and hands the registry
// to metricsHook.
func registerOpsMetrics(reg *prometheus.Registry, pkiMetrics prometheus.Collector) {
	reg.MustRegister(pkiMetrics)
	if metricsHook != nil {
		metricsHook(reg)
	}
}
