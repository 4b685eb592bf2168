package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// histogram is a Prometheus histogram read from a text exposition: the
// cumulative count at each upper bound, in order, and the total.
type histogram struct {
	les    []float64
	counts []float64
	total  float64
}

// parseHistogram reads histogram name (one series) from a text exposition.
func parseHistogram(r io.Reader, name string) (histogram, error) {
	var h histogram
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	prefix := name + `_bucket{le="`
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			le, val, ok := strings.Cut(rest, `"} `)
			if !ok {
				continue
			}
			b, err1 := strconv.ParseFloat(le, 64)
			v, err2 := strconv.ParseFloat(val, 64)
			if err1 != nil || err2 != nil {
				return h, fmt.Errorf("%s: bad bucket line %q", name, line)
			}
			h.les, h.counts = append(h.les, b), append(h.counts, v)
		} else if rest, ok := strings.CutPrefix(line, name+"_count "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				return h, fmt.Errorf("%s: bad count line %q", name, line)
			}
			h.total = v
		}
	}
	if err := sc.Err(); err != nil {
		return h, err
	}
	if len(h.les) == 0 {
		return h, fmt.Errorf("%s not exposed", name)
	}
	return h, nil
}

// sub is h - o, bucket by bucket (o an earlier scrape of the same series).
func (h histogram) sub(o histogram) histogram {
	d := histogram{les: h.les, counts: make([]float64, len(h.counts)), total: h.total - o.total}
	for i := range h.counts {
		d.counts[i] = h.counts[i]
		if i < len(o.counts) {
			d.counts[i] -= o.counts[i]
		}
	}
	return d
}

// over is how many samples exceed the largest bucket bound <= limit
// (so a sample counted may be up to one bucket under limit) and that
// bound.
func (h histogram) over(limit float64) (n, bound float64) {
	below := 0.0
	for i, le := range h.les {
		if le > limit {
			break
		}
		below, bound = h.counts[i], le
	}
	return h.total - below, bound
}

// maxBound is the upper bound of the lowest bucket that holds every
// sample (+Inf when only the +Inf bucket does).
func (h histogram) maxBound() float64 {
	for i, c := range h.counts {
		if c >= h.total {
			return h.les[i]
		}
	}
	return math.Inf(1)
}

// scrapeHistogram fetches s's /metrics and reads histogram name.
func (s *server) scrapeHistogram(ctx context.Context, name string) (histogram, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.metricsURL+"/metrics", nil)
	if err != nil {
		return histogram{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return histogram{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return histogram{}, fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	return parseHistogram(resp.Body, name)
}

// showSched describes d, a delta of go_sched_latencies_seconds: the
// share of sampled wakeups in each bucket from 100 µs up (client_golang
// keeps one bucket per decade of the runtime's histogram).
func showSched(d histogram) string {
	if d.total <= 0 {
		return "no samples"
	}
	var parts []string
	prev, lo := 0.0, 0.0
	for i, le := range d.les {
		n := d.counts[i] - prev
		prev = d.counts[i]
		if le >= 1e-4 && n > 0 {
			hi := "+Inf"
			if !math.IsInf(le, 1) {
				hi = showSeconds(le)
			}
			parts = append(parts, fmt.Sprintf("%s-%s %.0f (%.2f%%)", showSeconds(lo), hi, n, 100*n/d.total))
		}
		lo = le
	}
	return fmt.Sprintf("%.0f sampled goroutine wakeups; waited %s", d.total, strings.Join(parts, ", "))
}

func showSeconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}

// selfSched is this process's own go_sched_latencies_seconds (runtime
// metric /sched/latencies:seconds) as a cumulative histogram: the load
// generator's waits for its own P, which count in every latency it
// measures.
func selfSched() histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return histogram{}
	}
	h := s[0].Value.Float64Histogram()
	var out histogram
	cum := 0.0
	for i, c := range h.Counts {
		cum += float64(c)
		out.les = append(out.les, h.Buckets[i+1])
		out.counts = append(out.counts, cum)
	}
	out.total = cum
	return out
}
