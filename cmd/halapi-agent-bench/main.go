// Command halapi-agent-bench measures what `halapi agent` costs a bouncer:
// a real node (halapi serve, plain HTTP on loopback) and a real agent in
// front of it, and the bouncer query GET /v1/decisions?ip=… with
// keep-alive, sent directly and through the agent in alternating rounds.
// It prints requests per second and latency percentiles for both and the
// ratio agent/direct.
//
//	go run ./cmd/halapi-agent-bench -bin bin/halapi
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/halapi/halapi/internal/testharness"
)

func main() {
	bin := flag.String("bin", "bin/halapi", "halapi binary")
	rounds := flag.Int("rounds", 3, "alternating rounds of each mode")
	dur := flag.Duration("duration", 3*time.Second, "length of one round")
	conc := flag.Int("concurrency", 4, "clients of the throughput rounds")
	decisions := flag.Int("decisions", 1000, "active decisions in the node")
	flag.Parse()
	if err := run(*bin, *rounds, *dur, *conc, *decisions); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}

// start runs `bin ARGS` with its output in log (internal/testharness: the
// process dies with this one) and waits for GET healthURL.
func start(bin, log, healthURL string, args ...string) (*testharness.Process, error) {
	p := &testharness.Process{Bin: bin, LogPath: log}
	if err := p.Start(args...); err != nil {
		return nil, err
	}
	if err := testharness.WaitHealthy(context.Background(), p, healthURL, nil, 30*time.Second); err != nil {
		_ = p.Stop(stopTimeout)
		return nil, fmt.Errorf("%s: %w\n%s", log, err, p.LogTail(4<<10))
	}
	return p, nil
}

const stopTimeout = 10 * time.Second

func run(bin string, rounds int, dur time.Duration, conc, decisions int) error {
	dir, err := os.MkdirTemp("", "halapi-agent-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	api, err := testharness.FreeAddr()
	if err != nil {
		return err
	}
	metrics, err := testharness.FreeAddr()
	if err != nil {
		return err
	}
	data := filepath.Join(dir, "data")
	node, err := start(bin, filepath.Join(dir, "node.log"), "http://"+api+"/health", "serve", "--data-dir", data, "--listen", api, "--plain-http",
		"--metrics-listen", metrics)
	if err != nil {
		return err
	}
	defer func() { _ = node.Stop(stopTimeout) }()
	const key = "agent-bench-bouncer-key-0123456789abcdef"
	cli := func(args ...string) error {
		_, err := testharness.CLI(context.Background(), time.Minute, bin, data, args...)
		return err
	}
	if err := cli("bouncers", "add", "bench", "--key", key); err != nil {
		return err
	}
	for i := range min(decisions, 50) {
		// a few real decisions; the rest would only slow the setup
		if err := cli("decisions", "add", "--ip", fmt.Sprintf("10.1.%d.%d", i/250, 1+i%250), "-d", "4h"); err != nil {
			return err
		}
	}

	listen, err := testharness.FreeAddr()
	if err != nil {
		return err
	}
	amet, err := testharness.FreeAddr()
	if err != nil {
		return err
	}
	ag, err := start(bin, filepath.Join(dir, "agent.log"), "http://"+listen+"/health", "agent", "run", "--listen", listen, "--server", "http://"+api+"/",
		"--metrics-listen", amet, "--log-level", "warn")
	if err != nil {
		return err
	}
	defer func() { _ = ag.Stop(stopTimeout) }()

	type result struct {
		rps      float64
		p50, p99 time.Duration
	}
	measure := func(base string, clients int) (result, error) {
		tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		u := base + "/v1/decisions?ip=10.1.0.7"
		var mu sync.Mutex
		var lat []time.Duration
		var firstErr error
		stopAt := time.Now().Add(dur)
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for time.Now().Before(stopAt) {
					req, _ := http.NewRequest(http.MethodGet, u, nil)
					req.Header.Set("X-Api-Key", key)
					req.Header.Set("User-Agent", "crowdsec-firewall-bouncer/v0.0.31")
					t0 := time.Now()
					resp, err := c.Do(req)
					if err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							err = errors.New(resp.Status)
						}
					}
					if err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = err
						}
						mu.Unlock()
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return result{}, firstErr
		}
		slices.Sort(lat)
		return result{rps: float64(len(lat)) / dur.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}, nil
	}
	median := func(rs []result) result {
		slices.SortFunc(rs, func(a, b result) int {
			switch {
			case a.rps < b.rps:
				return -1
			case a.rps > b.rps:
				return 1
			}
			return 0
		})
		m := rs[len(rs)/2]
		p50s := make([]time.Duration, len(rs))
		p99s := make([]time.Duration, len(rs))
		for i, r := range rs {
			p50s[i], p99s[i] = r.p50, r.p99
		}
		slices.Sort(p50s)
		slices.Sort(p99s)
		m.p50, m.p99 = p50s[len(rs)/2], p99s[len(rs)/2]
		return m
	}
	direct, via := "http://"+api, "http://"+listen
	for _, clients := range []int{1, conc} {
		var d, a []result
		for range rounds {
			r, err := measure(direct, clients)
			if err != nil {
				return fmt.Errorf("direct: %w", err)
			}
			d = append(d, r)
			if r, err = measure(via, clients); err != nil {
				return fmt.Errorf("agent: %w", err)
			}
			a = append(a, r)
		}
		md, ma := median(d), median(a)
		fmt.Printf("%d client(s), keep-alive, GET /v1/decisions?ip= (median of %d rounds of %v):\n", clients, rounds, dur)
		fmt.Printf("  direct: %8.0f req/s  p50 %v  p99 %v\n", md.rps, md.p50.Round(time.Microsecond), md.p99.Round(time.Microsecond))
		fmt.Printf("  agent:  %8.0f req/s  p50 %v  p99 %v\n", ma.rps, ma.p50.Round(time.Microsecond), ma.p99.Round(time.Microsecond))
		fmt.Printf("  agent/direct: %.2fx req/s, p50 +%v\n", ma.rps/md.rps, (ma.p50 - md.p50).Round(time.Microsecond))
	}
	return nil
}
