package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// loadSpec describes one closed-loop load run: conns workers, each with its
// own keep-alive connection, send requests back to back for warmup+duration;
// only requests that start after the warmup and finish before the end count.
type loadSpec struct {
	conns    int
	warmup   time.Duration
	duration time.Duration
	// expect is the status a successful answer has.
	expect int
	// units is how many units (alerts...) one successful request carries.
	units int
	// build makes the next request of a worker.
	build func(w *worker) (*http.Request, error)
}

// worker is the per-goroutine state handed to loadSpec.build.
type worker struct {
	id  int
	rng *rand.Rand
	seq int
}

// loadResult is what one run measured.
type loadResult struct {
	Requests   int64         `json:"requests"`
	Errors     int64         `json:"errors"`
	FirstError string        `json:"first_error,omitempty"`
	Elapsed    time.Duration `json:"elapsed_ns"`
	RPS        float64       `json:"requests_per_s"`
	UnitsPerS  float64       `json:"units_per_s"`
	P50        time.Duration `json:"p50_ns"`
	P99        time.Duration `json:"p99_ns"`
	// ServerCPU is the CPU time the measured server process used during the
	// measured window (0 for the in-process bare handler).
	ServerCPU time.Duration `json:"server_cpu_ns,omitempty"`
}

// newLoadClient returns a client that keeps exactly conns connections open
// to one host.
func newLoadClient(conns int, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// runLoad runs spec. cpuPID, when non-zero, is a process whose CPU time over
// the measured window is reported.
func runLoad(ctx context.Context, spec loadSpec, cpuPID int) (loadResult, error) {
	client := newLoadClient(spec.conns, 60*time.Second)
	defer client.CloseIdleConnections()

	start := time.Now()
	mStart := start.Add(spec.warmup)
	end := mStart.Add(spec.duration)

	type workerOut struct {
		lat      []time.Duration
		errors   int64
		firstErr string
	}
	outs := make([]workerOut, spec.conns)
	var wg sync.WaitGroup
	seed := uint64(time.Now().UnixNano())
	for i := 0; i < spec.conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w := &worker{id: i, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
			o := &outs[i]
			o.lat = make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				req, err := spec.build(w)
				w.seq++
				if err != nil {
					o.errors++
					if o.firstErr == "" {
						o.firstErr = err.Error()
					}
					return
				}
				req = req.WithContext(ctx)
				t0 = time.Now()
				resp, err := client.Do(req)
				status := 0
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				t1 := time.Now()
				if t0.Before(mStart) || t1.After(end) {
					continue // warm-up, or straddles the end of the window
				}
				if err == nil && status != spec.expect {
					err = fmt.Errorf("%s %s: status %d, want %d", req.Method, req.URL.Path, status, spec.expect)
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					o.errors++
					if o.firstErr == "" {
						o.firstErr = err.Error()
					}
					continue
				}
				o.lat = append(o.lat, t1.Sub(t0))
			}
		}(i)
	}

	// Sample the server's CPU time at the window's edges.
	var cpu0, cpu1 time.Duration
	var cpuErr error
	if cpuPID != 0 {
		sleepUntil(ctx, mStart)
		cpu0, cpuErr = cpuTime(cpuPID)
		sleepUntil(ctx, end)
		if cpuErr == nil {
			cpu1, cpuErr = cpuTime(cpuPID)
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return loadResult{}, err
	}

	var all []time.Duration
	res := loadResult{Elapsed: spec.duration}
	for _, o := range outs {
		all = append(all, o.lat...)
		res.Errors += o.errors
		if res.FirstError == "" {
			res.FirstError = o.firstErr
		}
	}
	res.Requests = int64(len(all))
	res.RPS = float64(res.Requests) / spec.duration.Seconds()
	units := spec.units
	if units == 0 {
		units = 1
	}
	res.UnitsPerS = res.RPS * float64(units)
	if len(all) > 0 {
		slices.Sort(all)
		res.P50 = percentile(all, 0.50)
		res.P99 = percentile(all, 0.99)
	}
	if cpuPID != 0 && cpuErr == nil {
		res.ServerCPU = cpu1 - cpu0
	}
	return res, nil
}

// percentile of a sorted slice (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

// medianOf returns the median of the values f picks out of rs (the mean of
// the two middle ones for an even count).
func medianOf[T any](rs []T, f func(T) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}
