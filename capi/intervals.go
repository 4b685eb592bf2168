package capi

import "time"

// SetIntervals sets the pull, push and metrics intervals (metrics and
// usage metrics share one), each with the jitter that keeps CrowdSec's
// jitter/interval ratio (the default jitter for the default interval).
// Intervals must be > 0 (the caller names its flags in the error).
func (c *Config) SetIntervals(pull, push, metrics time.Duration) {
	d := DefaultConfig()
	c.PullInterval, c.PullJitter = pull, scaledJitter(pull, d.PullInterval, d.PullJitter)
	c.PushInterval, c.PushJitter = push, scaledJitter(push, d.PushInterval, d.PushJitter)
	c.MetricsInterval, c.MetricsJitter = metrics, scaledJitter(metrics, d.MetricsInterval, d.MetricsJitter)
	c.UsageMetricsInterval, c.UsageMetricsJitter = metrics, scaledJitter(metrics, d.UsageMetricsInterval, d.UsageMetricsJitter)
}

// scaledJitter keeps the reference's jitter/interval ratio for a custom
// interval.
func scaledJitter(interval, defInterval, defJitter time.Duration) time.Duration {
	if interval == defInterval {
		return defJitter
	}
	return time.Duration(float64(interval) * float64(defJitter) / float64(defInterval))
}
