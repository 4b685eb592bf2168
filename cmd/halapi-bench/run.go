package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// alertsPerBatch is the size of one ingestion POST (what the agent sends).
	alertsPerBatch = 50
	// decisionsPerAlert is how many decisions one import alert carries.
	decisionsPerAlert = 10000
	// loadConns is how many import POSTs run at once.
	loadConns = 2
	// queryPaths is how many distinct query URLs the generator picks from.
	queryPaths = 8192
)

// bench is one benchmark run: its scratch dir, its servers, its report.
type bench struct {
	cfg  config
	log  io.Writer
	tmp  string
	bare *bareServer
	rep  *report
	kind serverKind

	mu      sync.Mutex
	servers []*server

	// profiled counts the load runs profiled so far (-profile-dir).
	profiled int

	// retrySpent is the time load runs redone because other processes
	// disturbed them have taken so far (bounded by cfg.RetryBudget).
	retrySpent time.Duration
}

// run executes every phase and returns the report (also when a phase
// failed: what was measured is kept). Servers and scratch files are gone
// when it returns.
func run(ctx context.Context, cfg config, log io.Writer) (*report, error) {
	bin, err := filepath.Abs(cfg.Bin)
	if err != nil {
		return nil, err
	}
	cfg.Bin = bin
	b := &bench{cfg: cfg, log: log, rep: newReport(cfg)}
	b.tmp, err = os.MkdirTemp("", "halapi-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.tmp)
	defer b.stopAll()

	help, _ := exec.CommandContext(ctx, bin, "serve", "--help").CombinedOutput()
	b.kind = serverKind{bin: bin, https: cfg.TLS, plainFlag: bytes.Contains(help, []byte("--plain-http")),
		metricsFlag: bytes.Contains(help, []byte("--metrics-listen"))}
	if cfg.TLS && !b.kind.plainFlag {
		return nil, errors.New("-tls: this halapi binary serves plain HTTP only (its serve has no --plain-http, so no HTTPS by default)")
	}
	b.bare, err = startBare(cfg.TLS)
	if err != nil {
		return nil, fmt.Errorf("bare handler: %w", err)
	}
	defer b.bare.close()

	b.progress("halapi %s, %d CPUs, %s per run, %d run(s) per load phase", bin, runtime.NumCPU(), cfg.Duration, cfg.Runs)

	var errs []error
	for _, p := range []struct {
		name string
		f    func(context.Context) error
	}{
		{"query", b.phaseQuery},
		{"ingest", b.phaseIngest},
		{"memory", b.phaseMemory},
		{"cluster", b.phaseCluster},
		{"tls", b.phaseTLS},
		{"capi", b.phaseCAPI},
		{"scale", b.phaseScale},
		{"agent", b.phaseAgent},
		{"ui", b.phaseUI},
		{"scale-stream", b.phaseScaleStream},
	} {
		if !cfg.Phases[p.name] {
			continue
		}
		if err := p.f(ctx); err != nil {
			b.rep.RetrySpent = b.retrySpent.Round(time.Second).String()
			if ctx.Err() != nil {
				b.rep.Errors = append(b.rep.Errors, "interrupted")
				return b.rep, fmt.Errorf("interrupted during the %s phase", p.name)
			}
			b.rep.Errors = append(b.rep.Errors, p.name+": "+err.Error())
			errs = append(errs, fmt.Errorf("%s phase: %w", p.name, err))
		}
		b.stopAll()
	}
	b.rep.Finished = time.Now().UTC()
	b.rep.RetrySpent = b.retrySpent.Round(time.Second).String()
	return b.rep, errors.Join(errs...)
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "halapi-bench: "+format+"\n", args...)
}

// start starts a server of the run's kind (b.kind), stopped with the
// phase.
func (b *bench) start(ctx context.Context, name string, extra ...string) (*server, error) {
	return b.startKind(ctx, b.kind, name, extra...)
}

// startKind is start for a given kind of server (HTTPS or plain HTTP
// whatever -tls says).
func (b *bench) startKind(ctx context.Context, kind serverKind, name string, extra ...string) (*server, error) {
	s, err := startServer(ctx, kind, b.tmp, name, extra...)
	if err != nil {
		return nil, err
	}
	b.track(s)
	return s, nil
}

// track has the phase's end stop s.
func (b *bench) track(s *server) {
	b.mu.Lock()
	b.servers = append(b.servers, s)
	b.mu.Unlock()
}

func (b *bench) stopAll() {
	b.mu.Lock()
	servers := b.servers
	b.servers = nil
	b.mu.Unlock()
	for _, s := range servers {
		s.stop()
	}
}

// --------------------------------------------------------------------------
// Phase 1: point queries and the startup stream.

func (b *bench) phaseQuery(ctx context.Context) error {
	n := b.cfg.Decisions
	b.progress("query: starting a server and loading %s decisions", thousands(float64(n)))
	d, err := b.loadedServer(ctx, "query", n)
	if err != nil {
		return err
	}
	b.progress("query: loaded in %s", d.loadTime.Round(time.Millisecond))
	mem, err := idleMemory(ctx, d.s, b.cfg.Idle)
	if err != nil {
		return err
	}
	bareRuns, halRuns, err := b.queryPairs(ctx, d, n)
	if err != nil {
		return err
	}
	mUnderLoad, _ := readMem(d.s.pid())
	st, err := b.streamRuns(ctx, d)
	if err != nil {
		return err
	}
	mAfter, _ := readMem(d.s.pid())

	b.reportQuery(n, bareRuns, halRuns)
	b.reportStream(n, st)
	nd := thousands(float64(n))
	b.rep.add(&metric{Key: "rss_small_mib", Name: fmt.Sprintf("RSS, %s decisions (after load / idle)", nd), Unit: unitMiB,
		Value: mib(max(mem.afterLoad.RSS, mem.afterIdle.RSS)), Target: "- (CrowdSec: ~200 MB)"})
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("%s decisions: loaded in %s; RSS %.0f MiB after load, %.0f MiB after %s idle, %.0f MiB after the query load, %.0f MiB after the stream runs (peak %.0f MiB)",
		nd, d.loadTime.Round(time.Millisecond), mib(mem.afterLoad.RSS), mib(mem.afterIdle.RSS), b.cfg.Idle, mib(mUnderLoad.RSS), mib(mAfter.RSS), mib(mAfter.HWM)),
		fmt.Sprintf("%s decisions, after idle: %s", nd, mem))
	d.s.stop()
	return nil
}

// loaded is a server holding decisions [0, n) of the import set, with a
// machine (its JWT) and a bouncer (its key).
type loaded struct {
	s          *server
	token, key string
	loadTime   time.Duration
}

// loadedServer starts a fresh server, adds a machine and a bouncer, loads
// n decisions and checks that they are served.
func (b *bench) loadedServer(ctx context.Context, name string, n int, extra ...string) (loaded, error) {
	s, err := b.start(ctx, name, extra...)
	if err != nil {
		return loaded{}, err
	}
	return loadServer(ctx, s, n)
}

// loadServer is loadedServer on a running server.
func loadServer(ctx context.Context, s *server, n int) (loaded, error) {
	d := loaded{s: s}
	var err error
	if d.token, err = s.addMachine(ctx, "bench-loader"); err != nil {
		return d, err
	}
	if d.key, err = s.addBouncer(ctx, "bench-bouncer"); err != nil {
		return d, err
	}
	if d.loadTime, err = loadDecisions(ctx, s, d.token, n); err != nil {
		return d, err
	}
	return d, checkLookups(ctx, s, d.key, n)
}

// idleMem is a server's memory right after loading and after an idle
// pause.
type idleMem struct {
	afterLoad, afterIdle memInfo
	heap                 goMem // the Go runtime's view after the pause
	heapErr              error
}

func (m idleMem) String() string { return describeMem(m.afterIdle, m.heap, m.heapErr) }

func idleMemory(ctx context.Context, s *server, idle time.Duration) (idleMem, error) {
	var m idleMem
	var err error
	if m.afterLoad, err = readMem(s.pid()); err != nil {
		return m, err
	}
	sleepUntil(ctx, time.Now().Add(idle))
	if err := ctx.Err(); err != nil {
		return m, err
	}
	if m.afterIdle, err = readMem(s.pid()); err != nil {
		return m, err
	}
	m.heap, m.heapErr = s.goMem(ctx)
	return m, nil
}

// queryPairs runs the point-query load on d's server, interleaved with the
// bare handler.
func (b *bench) queryPairs(ctx context.Context, d loaded, n int) (bare, hal []loadResult, err error) {
	paths := queryPathList(importNet, n)
	bare, hal, err = b.pairs(ctx, "query",
		func(ctx context.Context) (loadResult, error) {
			return runLoad(ctx, b.querySpec(b.bare.url, b.bare.tls, d.key, paths), 0)
		},
		func(ctx context.Context) (loadResult, error) {
			return runLoad(ctx, b.querySpec(d.s.url, d.s.tls, d.key, paths), d.s.pid())
		},
		func(r loadResult) string {
			return fmt.Sprintf("%s req/s (p50 %s, %d errors)", thousands(r.RPS), r.P50.Round(time.Microsecond), r.Errors)
		})
	if err != nil {
		return nil, nil, err
	}
	b.rep.Runs["query_bare"] = bare
	b.rep.Runs["query_halapi"] = hal
	return bare, hal, nil
}

func (b *bench) reportQuery(n int, bareRuns, halRuns []loadResult) {
	nd := thousands(float64(n))
	rps := func(r loadResult) float64 { return r.RPS }
	p50 := func(r loadResult) float64 { return ms(r.P50) }
	p99 := func(r loadResult) float64 { return ms(r.P99) }
	hRPS, bRPS := medianOf(halRuns, rps), medianOf(bareRuns, rps)
	ratio := pairedRatio(halRuns, bareRuns, rps)
	qm := b.rep.add(&metric{Key: "query_rps", Name: fmt.Sprintf("GET /v1/decisions?ip= (%s decisions, %d conns)", nd, b.cfg.Conns),
		Unit: unitRPS, Value: hRPS, Bare: bRPS, Ratio: ratio,
		Target: fmt.Sprintf(">= 0.5x bare (~%s req/s)", thousands(bRPS/2))})
	qm.judge(ratio >= 0.5)
	qm.Errors = sumErrors(halRuns)
	b.rep.add(&metric{Key: "query_p50_ms", Name: "  latency p50", Unit: unitMS, Value: medianOf(halRuns, p50), Bare: medianOf(bareRuns, p50),
		Ratio: pairedRatio(halRuns, bareRuns, p50), Target: "- (CrowdSec: ~170-210 ms)"})
	b.rep.add(&metric{Key: "query_p99_ms", Name: "  latency p99", Unit: unitMS, Value: medianOf(halRuns, p99), Bare: medianOf(bareRuns, p99),
		Ratio: pairedRatio(halRuns, bareRuns, p99), Target: "-"})
	if len(halRuns) > 1 {
		per := make([]string, len(halRuns))
		for i := range halRuns {
			per[i] = fmt.Sprintf("%s/%s=%.2f", thousands(halRuns[i].RPS), thousands(bareRuns[i].RPS), halRuns[i].RPS/bareRuns[i].RPS)
		}
		b.rep.Notes = append(b.rep.Notes, "query: halapi/bare req/s per run, in order: "+strings.Join(per, ", "))
	}
	if cpu := medianOf(halRuns, func(r loadResult) float64 { return r.ServerCPU.Seconds() }); cpu > 0 {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("query: the halapi process used %.2f CPU cores during the load (%.1f µs of CPU per request); "+
			"the load generator shares the same %d CPUs", cpu/b.cfg.Duration.Seconds(), cpu/(hRPS*b.cfg.Duration.Seconds())*1e6, runtime.NumCPU()))
	}
}

// streamTimes is the startup stream timed on halapi and on the bare
// handler serving the very same bytes.
type streamTimes struct {
	hal, bare []float64 // ms, one per fetch, alternating
	body      []byte    // halapi's answer
	decisions int       // decisions in it
}

func (b *bench) streamRuns(ctx context.Context, d loaded) (streamTimes, error) {
	b.progress("stream: %d timed fetches each", b.cfg.StreamRuns)
	client, bareClient := d.s.client(1, 60*time.Second), newClient(1, 60*time.Second, b.bare.tls)
	defer client.CloseIdleConnections()
	defer bareClient.CloseIdleConnections()
	var st streamTimes
	body, _, err := fetchStream(ctx, client, d.s.url, d.key)
	if err != nil {
		return st, err
	}
	st.body, st.decisions = body, bytes.Count(body, []byte(`{"duration":`))
	b.bare.setStream(body)
	if _, _, err := fetchStream(ctx, bareClient, b.bare.url, d.key); err != nil {
		return st, fmt.Errorf("bare stream: %w", err)
	}
	for i := 0; i < b.cfg.StreamRuns; i++ {
		_, t, err := fetchStream(ctx, client, d.s.url, d.key)
		if err != nil {
			return st, err
		}
		st.hal = append(st.hal, ms(t))
		_, t, err = fetchStream(ctx, bareClient, b.bare.url, d.key)
		if err != nil {
			return st, fmt.Errorf("bare stream: %w", err)
		}
		st.bare = append(st.bare, ms(t))
	}
	b.rep.StreamMS = map[string][]float64{"halapi": st.hal, "bare": st.bare}
	return st, nil
}

func (b *bench) reportStream(n int, st streamTimes) {
	nd := thousands(float64(n))
	hStream, bStream := medianOf(st.hal, ident), medianOf(st.bare, ident)
	ratios := make([]float64, len(st.hal))
	for i := range st.hal {
		ratios[i] = st.hal[i] / st.bare[i]
	}
	sm := b.rep.add(&metric{Key: "stream_ms", Name: fmt.Sprintf("startup stream, %s decisions (to last byte)", nd), Unit: unitMS,
		Value: hStream, Bare: bStream, Ratio: medianOf(ratios, ident), Target: "< 100 ms"})
	sm.judge(hStream < 100)
	b.rep.add(&metric{Key: "stream_mb", Name: "  stream body size", Unit: unitMB, Value: float64(len(st.body)) / 1e6, Target: "- (CrowdSec: 8.8 MB for 50,000)"})
	if st.decisions != n {
		sm.Note = fmt.Sprintf("stream held %d decisions, expected %d", st.decisions, n)
		b.rep.Notes = append(b.rep.Notes, "stream: "+sm.Note)
	}
}

// queryPathList is the query URLs of the point-query load: half of them
// ask for addresses of decisions [0, n) of the data set in net, half for
// addresses that have none.
func queryPathList(net byte, n int) []string {
	paths := make([]string, queryPaths)
	for i := range paths {
		var ip uint32
		if i%2 == 0 {
			ip = benchIP(net, (i*7919)%n) // loaded
		} else {
			ip = benchIP(net, n+(i*104729)%(ipSpace-n)) // not loaded
		}
		paths[i] = "/v1/decisions?ip=" + ipString(ip)
	}
	return paths
}

// querySpec is the point-query load (b.cfg.Conns keep-alive connections)
// against base as the bouncer with API key key.
func (b *bench) querySpec(base string, tc *tls.Config, key string, paths []string) loadSpec {
	return loadSpec{
		conns: b.cfg.Conns, warmup: b.cfg.warmup(), duration: b.cfg.Duration, expect: http.StatusOK, tls: tc,
		build: func(w *worker) (*http.Request, error) {
			req, err := http.NewRequestWithContext(w.ctx, http.MethodGet, base+paths[w.rng.IntN(len(paths))], nil)
			if err != nil {
				return nil, err
			}
			req.Header.Set("X-Api-Key", key)
			req.Header.Set("User-Agent", bouncerUA)
			return req, nil
		},
	}
}

// ingestSpec is the alert ingestion load (b.cfg.IngestConns connections
// posting batches of alertsPerBatch agent alerts); seq numbers the alerts
// so that every one has its own source address.
func (b *bench) ingestSpec(base string, tc *tls.Config, token string, seq *atomic.Int64) loadSpec {
	now := time.Now().UTC().Format(time.RFC3339)
	return loadSpec{
		conns: b.cfg.IngestConns, warmup: b.cfg.warmup(), duration: b.cfg.Duration, tls: tc,
		expect: http.StatusCreated, units: alertsPerBatch,
		build: func(w *worker) (*http.Request, error) {
			first := int(seq.Add(alertsPerBatch)) - alertsPerBatch
			return newAlertsRequest(w.ctx, base, token, agentBatch(first, alertsPerBatch, now))
		},
	}
}

const (
	// disturbedCores: a run during which the rest of the machine used more
	// CPU than this is disturbed (this box has 2 cores, shared).
	disturbedCores = 0.25
	// pairAttempts bounds how often a disturbed bare/halapi pair (or round
	// of a comparison) is redone; -retry-budget bounds the time all redone
	// runs may take.
	pairAttempts = 3
)

// pairs runs cfg.Runs pairs of load runs, bare handler first then halapi,
// so that each pair sees about the same machine. A pair during which other
// processes used the CPU is run again (see rounds); if it is still
// disturbed it is kept and flagged in the notes.
func (b *bench) pairs(ctx context.Context, name string, bareRun, halRun func(context.Context) (loadResult, error), show func(loadResult) string) (bare, hal []loadResult, err error) {
	res, err := b.rounds(ctx, name, false, []contender{{"bare", bareRun}, {"halapi", halRun}}, show)
	if err != nil {
		return nil, nil, err
	}
	return res[0], res[1], nil
}

// fetchStream GETs the startup stream and returns its body and the time to
// its last byte.
func fetchStream(ctx context.Context, client *http.Client, base, key string) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/decisions/stream?startup=true", nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("X-Api-Key", key)
	req.Header.Set("User-Agent", bouncerUA)
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET stream: status %d: %.200s", resp.StatusCode, body)
	}
	return body, d, nil
}

// checkLookups makes sure the data is there: a loaded address is found and
// an unloaded one is not.
func checkLookups(ctx context.Context, s *server, key string, n int) error {
	client := s.client(1, 30*time.Second)
	defer client.CloseIdleConnections()
	for _, c := range []struct {
		ip   uint32
		want bool
	}{
		{benchIP(importNet, 0), true},
		{benchIP(importNet, n/2), true},
		{benchIP(importNet, n-1), true},
		{benchIP(importNet, n), false},
	} {
		ip := ipString(c.ip)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/decisions?ip="+ip, nil)
		req.Header.Set("X-Api-Key", key)
		req.Header.Set("User-Agent", bouncerUA)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v1/decisions?ip=%s: status %d: %.200s", ip, resp.StatusCode, body)
		}
		found := bytes.Contains(body, []byte(`"value":"`+ip+`"`))
		if found != c.want {
			return fmt.Errorf("GET /v1/decisions?ip=%s: found=%v, want %v (body %.200s)", ip, found, c.want, body)
		}
	}
	return nil
}

// loadDecisions imports decisions [0, n) of the import set through POST
// /v1/alerts, one alert of up to decisionsPerAlert decisions per request.
func loadDecisions(ctx context.Context, s *server, token string, n int) (time.Duration, error) {
	return loadRange(ctx, s, token, 0, n)
}

// loadRange imports decisions [from, n) of the import set.
func loadRange(ctx context.Context, s *server, token string, from, n int) (time.Duration, error) {
	client := s.client(loadConns, 5*time.Minute)
	defer client.CloseIdleConnections()
	now := time.Now().UTC().Format(time.RFC3339)
	chunks := make(chan int)
	errc := make(chan error, loadConns)
	var failed atomic.Bool
	t0 := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < loadConns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for start := range chunks {
				if failed.Load() {
					continue
				}
				cnt := min(decisionsPerAlert, n-start)
				body := appendImportAlert([]byte{'['}, start, cnt, now)
				body = append(body, ']')
				if err := postAlerts(ctx, client, s.url, token, body, http.StatusCreated); err != nil {
					failed.Store(true)
					errc <- fmt.Errorf("import decisions %d..%d: %w", start, start+cnt-1, err)
				}
			}
		}()
	}
	for start := from; start < n; start += decisionsPerAlert {
		chunks <- start
	}
	close(chunks)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func postAlerts(ctx context.Context, client *http.Client, base, token string, body []byte, want int) error {
	req, err := newAlertsRequest(ctx, base, token, body)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("POST /v1/alerts: status %d: %.300s", resp.StatusCode, b)
	}
	return nil
}

func newAlertsRequest(ctx context.Context, base, token string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/alerts", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", watcherUA)
	req.Header.Set("Authorization", "Bearer "+token)
	return req, nil
}

// --------------------------------------------------------------------------
// Phase 2: alert ingestion.

func (b *bench) phaseIngest(ctx context.Context) error {
	// Distinct source addresses for every alert of a run.
	ingestSpec := b.ingestSpec
	var bareSeq atomic.Int64
	bareRun := func(ctx context.Context) (loadResult, error) {
		bareSeq.Store(0)
		return runLoad(ctx, ingestSpec(b.bare.url, b.bare.tls, "bare", &bareSeq), 0)
	}
	// Every halapi run gets a fresh server, so that runs (and runs redone
	// after a disturbance) all start from an empty store.
	type after struct {
		alerts int64
		mem    memInfo
	}
	var afters []after
	starts := 0
	halRun := func(ctx context.Context) (loadResult, error) {
		starts++
		s, err := b.start(ctx, fmt.Sprintf("ingest-%d", starts), "--flush-max-items", "10000000")
		if err != nil {
			return loadResult{}, err
		}
		defer s.stop()
		token, err := s.addMachine(ctx, "bench-agent")
		if err != nil {
			return loadResult{}, err
		}
		var seq atomic.Int64
		res, err := runLoad(ctx, ingestSpec(s.url, s.tls, token, &seq), s.pid())
		if err != nil {
			return res, err
		}
		m, _ := readMem(s.pid())
		afters = append(afters, after{seq.Load(), m})
		return res, nil
	}
	b.progress("ingest: each halapi run on a fresh server")
	bareRuns, halRuns, err := b.pairs(ctx, "ingest", bareRun, halRun,
		func(r loadResult) string {
			out := fmt.Sprintf("%s alerts/s (batch p50 %s, %d errors)", thousands(r.UnitsPerS), r.P50.Round(time.Microsecond), r.Errors)
			if r.FirstError != "" {
				out += "; first error: " + r.FirstError
			}
			return out
		})
	if err != nil {
		return err
	}
	b.rep.Runs["ingest_bare"] = bareRuns
	b.rep.Runs["ingest_halapi"] = halRuns
	per := make([]string, len(afters))
	for i, a := range afters {
		per[i] = fmt.Sprintf("%s alerts sent, RSS %.0f MiB", thousands(float64(a.alerts)), mib(a.mem.RSS))
	}
	b.reportIngest(bareRuns, halRuns, per)
	return nil
}

// reportIngest adds the ingestion figures; after describes each halapi
// run's server afterwards.
func (b *bench) reportIngest(bareRuns, halRuns []loadResult, after []string) {
	ups := func(r loadResult) float64 { return r.UnitsPerS }
	p50 := func(r loadResult) float64 { return ms(r.P50) }
	h, bare := medianOf(halRuns, ups), medianOf(bareRuns, ups)
	im := b.rep.add(&metric{Key: "ingest_alerts_per_s", Name: fmt.Sprintf("POST /v1/alerts (%d alerts/batch, %d conns)", alertsPerBatch, b.cfg.IngestConns),
		Unit: unitAlerts, Value: h, Bare: bare, Ratio: pairedRatio(halRuns, bareRuns, ups), Target: ">= 5,000 alerts/s"})
	im.judge(h >= 5000)
	im.Errors = sumErrors(halRuns)
	b.rep.add(&metric{Key: "ingest_p50_ms", Name: "  batch latency p50", Unit: unitMS, Value: medianOf(halRuns, p50), Bare: medianOf(bareRuns, p50),
		Ratio: pairedRatio(halRuns, bareRuns, p50), Target: "-"})
	if cpu := medianOf(halRuns, func(r loadResult) float64 { return r.ServerCPU.Seconds() }); cpu > 0 && h > 0 {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("ingest: the halapi process used %.2f CPU cores (%.1f µs of CPU per alert)",
			cpu/b.cfg.Duration.Seconds(), cpu/(h*b.cfg.Duration.Seconds())*1e6))
	}
	b.rep.Notes = append(b.rep.Notes, "ingest: each halapi run on a fresh server (--flush-max-items 10000000); afterwards: "+strings.Join(after, "; "))
}

// --------------------------------------------------------------------------
// Phase 3: memory with many decisions.

func (b *bench) phaseMemory(ctx context.Context) error {
	n := b.cfg.MemDecisions
	b.progress("memory: starting a fresh server and loading %s decisions", thousands(float64(n)))
	d, err := b.loadedServer(ctx, "memory", n)
	if err != nil {
		return err
	}
	b.progress("memory: loaded in %s; idle %s", d.loadTime.Round(time.Millisecond), b.cfg.Idle)
	mem, err := idleMemory(ctx, d.s, b.cfg.Idle)
	if err != nil {
		return err
	}

	nd := thousands(float64(n))
	rss := max(mem.afterLoad.RSS, mem.afterIdle.RSS)
	mm := b.rep.add(&metric{Key: "rss_large_mib", Name: fmt.Sprintf("RSS, %s decisions (after load / idle)", nd), Unit: unitMiB,
		Value: mib(rss), Target: "< 1024 MiB"})
	mm.judge(rss < 1<<30)
	b.rep.add(&metric{Key: "import_decisions_per_s", Name: fmt.Sprintf("  import rate (%d decisions/alert)", decisionsPerAlert), Unit: unitDecisions,
		Value: float64(n) / d.loadTime.Seconds(), Target: "-"})
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("%s decisions: loaded in %s; RSS %.0f MiB after load, %.0f MiB after %s idle, peak (VmHWM) %.0f MiB",
		nd, d.loadTime.Round(time.Millisecond), mib(mem.afterLoad.RSS), mib(mem.afterIdle.RSS), b.cfg.Idle, mib(max(mem.afterLoad.HWM, mem.afterIdle.HWM))),
		fmt.Sprintf("%s decisions, after idle: %s", nd, mem))
	d.s.stop()
	return nil
}

// --------------------------------------------------------------------------

// pairedRatio is the median over runs of f(hal[i]) / f(bare[i]): bare and
// halapi runs alternate, so each pair saw about the same machine, and the
// median of the pair ratios shrugs off a run disturbed by other work.
func pairedRatio(hal, bare []loadResult, f func(loadResult) float64) float64 {
	var rs []float64
	for i := range min(len(hal), len(bare)) {
		if d := f(bare[i]); d > 0 {
			rs = append(rs, f(hal[i])/d)
		}
	}
	return medianOf(rs, ident)
}

// balancedRatio is pairedRatio for contenders that ran in alternating
// order in a store that grows as they run (ingestion: each run is slower
// than the one before it, so the one that runs second in a round loses).
// Each ratio is the geometric mean of two adjacent rounds, which ran in
// opposite orders, so the growth cancels out; the median of those is
// returned. With an odd number of rounds pairedRatio's median would take
// one order twice as often as the other. In six `-phases cluster -runs 3`
// runs the follower / leader ratio of a round was 0.70-0.98 (median 0.90)
// when the leader ran first and 0.97-1.10 (median 1.02) when the follower
// did. With one round it is that round's ratio.
func balancedRatio(hal, ref []loadResult, f func(loadResult) float64) float64 {
	var per []float64
	for i := range min(len(hal), len(ref)) {
		if d := f(ref[i]); d > 0 {
			per = append(per, f(hal[i])/d)
		} else {
			per = append(per, math.NaN())
		}
	}
	if len(per) < 2 {
		return pairedRatio(hal, ref, f)
	}
	var rs []float64
	for i := 0; i+1 < len(per); i++ {
		if g := math.Sqrt(per[i] * per[i+1]); !math.IsNaN(g) {
			rs = append(rs, g)
		}
	}
	return medianOf(rs, ident)
}

func sumErrors(rs []loadResult) int64 {
	var n int64
	for _, r := range rs {
		n += r.Errors
	}
	return n
}

func ident(v float64) float64 { return v }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// thousands formats v rounded to an integer with comma separators.
func thousands(v float64) string {
	neg := v < 0
	if neg {
		v = -v
	}
	s := strconv.FormatInt(int64(v+0.5), 10)
	var out []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	if neg {
		return "-" + string(out)
	}
	return string(out)
}
