package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
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
	// tls is the client TLS configuration for an HTTPS target.
	tls *tls.Config
	// noKeepAlive opens a new connection (and over HTTPS does a full TLS
	// handshake) for every request.
	noKeepAlive bool
	// peers are further processes of the measured system (the other nodes
	// of a cluster): their CPU time is not counted as other processes'.
	peers []int
}

// worker is the per-goroutine state handed to loadSpec.build.
type worker struct {
	id  int
	ctx context.Context // the run's context: build requests with it
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
	// PeersCPU is the CPU time of loadSpec.peers during the window.
	PeersCPU time.Duration `json:"peers_cpu_ns,omitempty"`
	// OtherCores is the CPU the rest of the machine (neither this process
	// nor the server) used during the window, in cores: anything much above
	// zero means the figures are disturbed.
	OtherCores float64 `json:"other_cores"`
}

// cpuSample is the machine's, this process's and the server's CPU time at
// one instant.
type cpuSample struct {
	machine, self, server, peers time.Duration
	err                          error
}

func sampleCPU(serverPID int, peers ...int) cpuSample {
	var c cpuSample
	var err error
	if c.machine, err = machineBusy(); err != nil {
		c.err = err
		return c
	}
	if c.self, err = cpuTime(os.Getpid()); err != nil {
		c.err = err
		return c
	}
	if serverPID != 0 {
		if c.server, c.err = cpuTime(serverPID); c.err != nil {
			return c
		}
	}
	for _, pid := range peers {
		t, err := cpuTime(pid)
		if err != nil {
			c.err = err
			return c
		}
		c.peers += t
	}
	return c
}

// newClient returns an HTTP/1.1 client that keeps up to conns connections
// open to one host, trusting tlsCfg's roots for HTTPS. It has no overall
// Client.Timeout (that costs a timer and a context per request, in the
// measured loop): the caller's context and the transport's header timeout
// bound each request instead.
func newClient(conns int, timeout time.Duration, tlsCfg *tls.Config) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		MaxConnsPerHost:       conns,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
	return &http.Client{Transport: tr}
}

// runLoad runs spec. cpuPID, when non-zero, is a process whose CPU time over
// the measured window is reported.
func runLoad(ctx context.Context, spec loadSpec, cpuPID int) (loadResult, error) {
	client := newClient(spec.conns, 60*time.Second, spec.tls)
	defer client.CloseIdleConnections()
	client.Transport.(*http.Transport).DisableKeepAlives = spec.noKeepAlive

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
			w := &worker{id: i, ctx: ctx, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
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

	// Sample CPU times at the window's edges.
	sleepUntil(ctx, mStart)
	cpu0 := sampleCPU(cpuPID, spec.peers...)
	sleepUntil(ctx, end)
	cpu1 := sampleCPU(cpuPID, spec.peers...)
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
	if cpu0.err == nil && cpu1.err == nil {
		res.ServerCPU = cpu1.server - cpu0.server
		res.PeersCPU = cpu1.peers - cpu0.peers
		other := (cpu1.machine - cpu0.machine) - (cpu1.self - cpu0.self) - res.ServerCPU - res.PeersCPU
		res.OtherCores = max(0, other.Seconds()/spec.duration.Seconds())
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
