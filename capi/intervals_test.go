package capi

import (
	"testing"
	"time"
)

func TestSetIntervalsScalesJitter(t *testing.T) {
	c := DefaultConfig()
	d := DefaultConfig()
	c.SetIntervals(d.PullInterval, d.PushInterval, d.MetricsInterval)
	if c.PullJitter != d.PullJitter || c.PushJitter != d.PushJitter || c.MetricsJitter != d.MetricsJitter || c.UsageMetricsJitter != d.UsageMetricsJitter {
		t.Fatalf("default intervals changed the jitters: %+v", c)
	}
	c.SetIntervals(time.Hour, 20*time.Second, time.Minute)
	if c.PullInterval != time.Hour || c.PullJitter != 150*time.Second || c.PushJitter != 14*time.Second ||
		c.MetricsInterval != time.Minute || c.MetricsJitter != 30*time.Second ||
		c.UsageMetricsInterval != time.Minute || c.UsageMetricsJitter != 30*time.Second {
		t.Fatalf("scaled: pull %v±%v push %v±%v metrics %v±%v usage %v±%v", c.PullInterval, c.PullJitter, c.PushInterval, c.PushJitter,
			c.MetricsInterval, c.MetricsJitter, c.UsageMetricsInterval, c.UsageMetricsJitter)
	}
}
