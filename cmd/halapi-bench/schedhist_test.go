package main

import (
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestParseHistogramAndDelta(t *testing.T) {
	expo := func(b1, b2, b3, inf float64) string {
		return "# TYPE go_sched_latencies_seconds histogram\n" +
			`go_sched_latencies_seconds_bucket{le="0.0005"} ` + ftoa(b1) + "\n" +
			`go_sched_latencies_seconds_bucket{le="0.004"} ` + ftoa(b2) + "\n" +
			`go_sched_latencies_seconds_bucket{le="0.016"} ` + ftoa(b3) + "\n" +
			`go_sched_latencies_seconds_bucket{le="+Inf"} ` + ftoa(inf) + "\n" +
			"go_sched_latencies_seconds_sum 1.5\n" +
			"go_sched_latencies_seconds_count " + ftoa(inf) + "\n" +
			`go_sched_latencies_seconds_other{le="1"} 99` + "\n"
	}
	h0, err := parseHistogram(strings.NewReader(expo(10, 10, 10, 10)), "go_sched_latencies_seconds")
	if err != nil {
		t.Fatal(err)
	}
	h1, err := parseHistogram(strings.NewReader(expo(100, 150, 158, 160)), "go_sched_latencies_seconds")
	if err != nil {
		t.Fatal(err)
	}
	d := h1.sub(h0)
	if d.total != 150 || len(d.counts) != 4 || d.counts[1] != 140 {
		t.Fatalf("delta %+v", d)
	}
	if n, b := d.over(0.001); n != 60 || b != 0.0005 {
		t.Errorf("over 1ms = %v (bound %v), want 60 (0.0005)", n, b)
	}
	if n, b := d.over(0.010); n != 10 || b != 0.004 {
		t.Errorf("over 10ms = %v (bound %v), want 10 (0.004)", n, b)
	}
	if m := d.maxBound(); !math.IsInf(m, 1) {
		t.Errorf("maxBound = %v, want +Inf (2 samples beyond 16 ms)", m)
	}
	if m := h0.maxBound(); m != 0.0005 {
		t.Errorf("maxBound = %v, want 0.0005", m)
	}
	if got, want := showSched(d), "150 sampled goroutine wakeups; waited 0s-500µs 90 (60.00%), 500µs-4ms 50 (33.33%), 4ms-16ms 8 (5.33%), 16ms-+Inf 2 (1.33%)"; got != want {
		t.Errorf("showSched = %q", got)
	}
	if _, err := parseHistogram(strings.NewReader("x 1\n"), "go_sched_latencies_seconds"); err == nil {
		t.Error("a missing histogram parsed")
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
