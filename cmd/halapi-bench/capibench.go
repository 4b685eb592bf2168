package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/capi/capitest"
)

const (
	// capiNet holds the addresses of the fake CAPI's blocklist.
	capiNet = 14
	// capiList is the blocklist's name (the scenario of its decisions).
	capiList = "bench-blocklist"
	// capiQueryConns and capiQueryRate are the paced bouncer load on the
	// follower while the blocklist is applied (and when idle): a light
	// load, so that it measures how the apply delays queries rather than
	// saturating the 2 cores.
	capiQueryConns = 8
	capiQueryRate  = 2000 // requests per second, all connections together
	// capiPullTimeout bounds the wait for the whole list on the follower,
	// plus capiPullPerDecision for every decision of the list.
	capiPullTimeout     = 3 * time.Minute
	capiPullPerDecision = 300 * time.Microsecond
	// capiPollEvery paces the polls that detect the last decision.
	capiPollEvery = time.Millisecond
)

// pacedSample is one request of a paced load.
type pacedSample struct {
	at  time.Time // sent
	lat time.Duration
	err bool
}

// pacedLoad sends GET /v1/decisions?ip= from conns connections at rate
// requests per second in all (each connection on its own schedule; one
// that falls behind skips the missed slots) until stop is closed.
func pacedLoad(ctx context.Context, s *server, key string, paths []string, conns int, rate float64, stop <-chan struct{}) []pacedSample {
	client := s.client(conns, 30*time.Second)
	defer client.CloseIdleConnections()
	interval := time.Duration(float64(conns) / rate * float64(time.Second))
	outs := make([][]pacedSample, conns)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(interval * time.Duration(i) / time.Duration(conns))
			for k := i; ; k += conns {
				if d := time.Until(next); d > 0 {
					select {
					case <-stop:
						return
					case <-ctx.Done():
						return
					case <-time.After(d):
					}
				}
				select {
				case <-stop:
					return
				default:
				}
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+paths[k%len(paths)], nil)
				if err != nil {
					return
				}
				req.Header.Set("X-Api-Key", key)
				req.Header.Set("User-Agent", bouncerUA)
				t0 := time.Now()
				resp, err := client.Do(req)
				failed := err != nil
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					failed = resp.StatusCode != http.StatusOK
				}
				if ctx.Err() != nil {
					return
				}
				outs[i] = append(outs[i], pacedSample{at: t0, lat: time.Since(t0), err: failed})
				next = next.Add(interval)
				if now := time.Now(); next.Before(now) {
					next = now
				}
			}
		}()
	}
	wg.Wait()
	var all []pacedSample
	for _, o := range outs {
		all = append(all, o...)
	}
	return all
}

// window returns the latencies of the successful samples sent in [from, to]
// and the number of failed ones.
func window(ss []pacedSample, from, to time.Time) (lats []time.Duration, errs int) {
	for _, s := range ss {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		if s.err {
			errs++
			continue
		}
		lats = append(lats, s.lat)
	}
	return lats, errs
}

// listProbes are the values waitVisible looks for to tell that the whole
// n-value list of capiNet is served: the list's last value and 256 values
// at even steps of the address order (a node may apply a list in address
// order, in chunks applied in any order: every chunk of more than n/256
// values holds a probe; followerHolds then checks the whole list).
func listProbes(n int) []string {
	ips := make([]uint32, n)
	for i := range ips {
		ips[i] = benchIP(capiNet, i)
	}
	last := ips[n-1]
	slices.Sort(ips)
	out := []string{ipString(last)}
	const steps = 256
	for k := 0; k <= steps; k++ {
		out = append(out, ipString(ips[min(n-1, k*n/steps)]))
	}
	return out
}

// waitVisible polls s for ips, one at a time (the next once the previous
// answered a decision: one query per capiPollEvery at most), and returns
// when the last answered.
func waitVisible(ctx context.Context, s *server, key string, ips []string, timeout time.Duration) (time.Time, error) {
	client := s.client(1, 10*time.Second)
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := lookup(ctx, client, s.url, key, ips[0])
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			if ips = ips[1:]; len(ips) == 0 {
				return time.Now(), nil
			}
			continue
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s (and %d more) not visible on %s within %s", ips[0], len(ips)-1, s.name, timeout)
		}
		sleepUntil(ctx, time.Now().Add(capiPollEvery))
		if err := ctx.Err(); err != nil {
			return time.Time{}, err
		}
	}
}

// --------------------------------------------------------------------------
// Phase: the leader pulls a big blocklist from a fake CAPI; how long until
// a follower serves all of it, and what the apply does to its queries.

// fakeCAPI is a fake Central API serving an n-decision blocklist, and the
// credentials file that points a node at it.
type fakeCAPI struct {
	*capitest.Server
	creds string
	n     int
}

func (b *bench) newFakeCAPI(name string, n int) (*fakeCAPI, error) {
	fake := capitest.New()
	login, password := "bench-"+randomHex(8), randomHex(16)
	fake.AddWatcher(login, password)
	creds := filepath.Join(b.tmp, name+"-online_api_credentials.yaml")
	if err := os.WriteFile(creds, fmt.Appendf(nil, "url: %s\nlogin: %s\npassword: %s\n", fake.BaseURL(), login, password), 0o600); err != nil {
		fake.Close()
		return nil, err
	}
	values := make([]string, n)
	for i := range values {
		values[i] = ipString(benchIP(capiNet, i))
	}
	fake.SetBlocklist(capiList, values)
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{
		fake.BlocklistLink(capiList, "ban", "Ip", "24h")}}})
	return &fakeCAPI{Server: fake, creds: creds, n: n}, nil
}

// capiArgs are the serve arguments of the nodes of a cluster pulling from
// f: one pull, when a machine with scenarios logs in, and no other CAPI
// traffic during the run.
func (f *fakeCAPI) capiArgs() []string {
	return []string{"--capi-credentials", f.creds, "--capi-pull-interval", "1h",
		"--capi-push-interval", "1h", "--capi-metrics-interval", "1h"}
}

// pullOnFreshCluster starts a 3-node cluster (env and args for every
// node) whose leader syncs with fake, adds a bouncer, and measures one
// blocklist pull (capiPull; pinned: the pinLayout). The cluster is stopped
// when it returns.
func (b *bench) pullOnFreshCluster(ctx context.Context, name string, fake *fakeCAPI, env []string, pinned bool, args ...string) (capiResult, error) {
	c, err := b.startClusterEnv(ctx, name, env, args...)
	if err != nil {
		return capiResult{}, err
	}
	defer c.stop()
	leader, _, err := c.roles(ctx)
	if err != nil {
		return capiResult{}, err
	}
	key, err := leader.addBouncer(ctx, "bench-bouncer")
	if err != nil {
		return capiResult{}, err
	}
	return b.capiPull(ctx, c, fake, key, pinned)
}

// capiResult is what one blocklist pull measured.
type capiResult struct {
	pull         time.Duration // stream call -> whole list on the follower
	during, idle durationStats // follower query latency
	errs         int
	notes        []string
	gcs          float64       // collections on the follower meanwhile
	gcPause      time.Duration // their stop-the-world pauses in all
	slow         string        // the slowest queries during the apply (offset: latency)
}

func (b *bench) phaseCAPI(ctx context.Context) error {
	n := b.cfg.CAPIDecisions
	fake, err := b.newFakeCAPI("capi", n)
	if err != nil {
		return err
	}
	defer fake.Close()
	b.progress("capi: starting 3 nodes with CAPI credentials for a fake CAPI serving a %s-decision blocklist", thousands(float64(n)))
	res, err := b.pullOnFreshCluster(ctx, "capi", fake, nil, false, fake.capiArgs()...)
	if err != nil {
		return err
	}
	nd := thousands(float64(n))
	b.rep.add(&metric{Key: "capi_pull_s", Name: fmt.Sprintf("CAPI pull, %s-decision blocklist: stream call -> all on a follower", nd),
		Unit: unitS, Value: res.pull.Seconds(), Target: "-"})
	qm := b.rep.add(&metric{Key: "capi_query_p99_ms", Name: fmt.Sprintf("  query p99 on the follower meanwhile (%d req/s)", capiQueryRate), Unit: unitMS,
		Value: res.during.P99, Ref: res.idle.P99, RefName: "idle", Target: "-"})
	qm.Errors = int64(res.errs)
	b.rep.Notes = append(b.rep.Notes, res.notes...)
	return nil
}

// capiPull makes the leader of c pull fake's blocklist (a machine logs in
// with scenarios, which unlocks the pull) while a paced bouncer load (API
// key key) runs on a follower, waits until the follower has the whole
// list, then runs the same load idle. pinned: the follower runs alone on
// the last CPU, the other nodes and this process on CPU 0 (pinLayout).
func (b *bench) capiPull(ctx context.Context, c *cluster, fake *fakeCAPI, key string, pinned bool) (capiResult, error) {
	var res capiResult
	n := fake.n
	leader, followers, err := c.roles(ctx)
	if err != nil {
		return res, err
	}
	fol := followers[0]
	if pinned {
		var others []int
		for _, s := range c.nodes {
			if s != fol && s.running() {
				others = append(others, s.pid())
			}
		}
		restore, err := pinLayout(fol.pid(), others)
		if err != nil {
			return res, err
		}
		defer restore()
		res.notes = append(res.notes, fmt.Sprintf("%s: pinned layout: follower %s alone on CPU %s, the other nodes (nice 19) on CPU %s, the load generator and fake CAPI on CPU %s",
			c.name, fol.name, allowedCPUs(fol.pid(), fol.pid()), allowedCPUs(others[0], others[0]), allowedCPUs(os.Getpid(), os.Getpid())))
	}
	gc0, _ := fol.scrape(ctx, "go_gc_duration_seconds_count", "")
	gcs0, _ := fol.scrape(ctx, "go_gc_duration_seconds_sum", "")
	srv0 := serverSide(ctx, fol)
	wait0, self0, waitFrom := runDelay(fol.pid()), runDelay(os.Getpid()), time.Now()
	sched0, schedErr := fol.scrapeHistogram(ctx, "go_sched_latencies_seconds")
	gen0 := selfSched()
	agent, agentPW := "capi-agent-"+randomHex(4), randomHex(16)
	if _, err := leader.cliWrite(ctx, "machines", "add", agent, "--password", agentPW); err != nil {
		return res, err
	}
	if got := fake.Count(capitest.Stream); got != 0 {
		return res, fmt.Errorf("the leader pulled before any machine had scenarios (%d stream calls)", got)
	}
	paths := queryPathList(capiNet, n)
	pull, err := b.pullUnderLoad(ctx, c, fake, fol, key, paths, func() error {
		_, err := leader.login(ctx, agent, agentPW, []string{"crowdsecurity/ssh-bf", "crowdsecurity/http-probing"})
		return err
	})
	if err != nil {
		return res, err
	}
	res.pull = pull.seen.Sub(pull.start)
	during, duringErrs := window(pull.samples, pull.start, pull.seen)
	gc1, _ := fol.scrape(ctx, "go_gc_duration_seconds_count", "")
	gcs1, _ := fol.scrape(ctx, "go_gc_duration_seconds_sum", "")
	gcMax, _ := fol.scrape(ctx, "go_gc_duration_seconds", `quantile="1"`)
	res.gcs, res.gcPause = gc1-gc0, time.Duration((gcs1-gcs0)*float64(time.Second))
	res.slow = slowest(pull.samples, pull.start, pull.seen, 5)
	srv1 := serverSide(ctx, fol)
	wait1, self1, waitTo := runDelay(fol.pid()), runDelay(os.Getpid()), time.Now()
	gen := selfSched().sub(gen0)
	gen1ms, _ := gen.over(0.001)
	gen10ms, _ := gen.over(0.01)
	sched := "not exposed by this binary"
	if schedErr == nil {
		if sched1, err := fol.scrapeHistogram(ctx, "go_sched_latencies_seconds"); err == nil {
			sched = showSched(sched1.sub(sched0))
		}
	}
	for i := range srv1 {
		srv1[i] -= srv0[i]
	}
	b.progress("capi: stream call %s after the login; list on the leader after %s, on the follower after %s",
		pull.start.Sub(pull.login).Round(time.Millisecond), pull.leaderSeen.Sub(pull.start).Round(time.Millisecond), res.pull.Round(time.Millisecond))
	if err := followerHolds(ctx, fol, key, n); err != nil {
		return res, err
	}

	// The same load when nothing is applied.
	sleepUntil(ctx, time.Now().Add(time.Second))
	idleFrom := time.Now()
	stop := make(chan struct{})
	time.AfterFunc(b.cfg.Duration, func() { close(stop) })
	idleSamples := pacedLoad(ctx, fol, key, paths, capiQueryConns, capiQueryRate, stop)
	if err := ctx.Err(); err != nil {
		return res, err
	}
	idle, idleErrs := window(idleSamples, idleFrom, time.Now())
	res.during, res.idle = statsOf(during), statsOf(idle)
	res.errs = duringErrs + idleErrs

	dl := "no blocklist download recorded"
	if !pull.download.IsZero() {
		dl = fmt.Sprintf("blocklist download at +%s", pull.download.Sub(pull.start).Round(time.Millisecond))
	}
	res.notes = append(res.notes,
		fmt.Sprintf("%s: the leader's first stream call came %s after the agent's login (the pull waits for a machine with scenarios); %s; "+
			"whole list answered (its last value and 256 probes in address order) by the leader at +%s, by follower %s at +%s (polled every %s); %s decisions in the follower's startup stream; "+
			"other processes used %.2f cores meanwhile; CPU used by the nodes (user+sys, login -> on the follower): %s",
			c.name, pull.start.Sub(pull.login).Round(time.Millisecond), dl, pull.leaderSeen.Sub(pull.start).Round(time.Millisecond), fol.name,
			res.pull.Round(time.Millisecond), capiPollEvery, thousands(float64(n)), pull.other, pull.nodeCPU),
		fmt.Sprintf("%s: follower queries (%d connections, %d req/s in all, half hits): during the apply %s; idle afterwards (%s) %s",
			c.name, capiQueryConns, capiQueryRate, res.during, b.cfg.Duration, res.idle),
		fmt.Sprintf("%s: follower %s from the login to the whole list: %.0f collections, stop-the-world pauses %s in all (longest recent %s); slowest queries during the apply: %s; "+
			"its own handler timings (cs_lapi_request_duration_seconds, all routes, login -> whole list): %.0f requests, %.0f over 10 ms, %.0f over 50 ms; its Go scheduler (go_sched_latencies_seconds: runnable -> running): %s; "+
			"time its threads waited for a CPU on the kernel's run queues (schedstat, all threads summed): %s in %s (the load generator's: %s); "+
			"the load generator's own Go scheduler meanwhile (its waits count in every latency it measures): %.0f wakeups, %.0f waited over ~1 ms, %.0f over ~10 ms",
			c.name, fol.name, res.gcs, res.gcPause.Round(time.Microsecond), time.Duration(gcMax*float64(time.Second)).Round(time.Microsecond), res.slow,
			srv1[0], srv1[0]-srv1[1], srv1[0]-srv1[2], sched,
			(wait1-wait0).Round(time.Millisecond), waitTo.Sub(waitFrom).Round(time.Millisecond), (self1-self0).Round(time.Millisecond),
			gen.total, gen1ms, gen10ms))
	return res, nil
}

// pullRun is one blocklist pull watched from a follower under load.
type pullRun struct {
	samples          []pacedSample // the follower's load, from before the pull to seen
	login, start     time.Time     // the agent's login; the leader's first stream call
	download         time.Time     // the blocklist download (zero: none recorded)
	leaderSeen, seen time.Time     // the list's last decision answered by the leader, by the follower
	other            float64       // cores other processes used meanwhile
	nodeCPU          string        // CPU seconds (user+sys) each node used meanwhile
}

// nodesCPU reads the CPU time of every node of c (0 when unreadable).
func nodesCPU(c *cluster) []time.Duration {
	out := make([]time.Duration, len(c.nodes))
	for i, s := range c.nodes {
		if s.running() {
			out[i], _ = cpuTime(s.pid())
		}
	}
	return out
}

// showNodesCPU shows the CPU seconds each node used between two nodesCPU samples.
func showNodesCPU(c *cluster, c0, c1 []time.Duration) string {
	var parts []string
	for i := range min(len(c0), len(c1), len(c.nodes)) {
		parts = append(parts, fmt.Sprintf("%s %.1f s", c.nodes[i].name, (c1[i]-c0[i]).Seconds()))
	}
	return strings.Join(parts, ", ")
}

// pullUnderLoad runs the paced bouncer load on fol and a watcher of the
// leader, unlocks the pull (login), and waits until fol answers the
// blocklist's last decision.
func (b *bench) pullUnderLoad(ctx context.Context, c *cluster, fake *fakeCAPI, fol *server, key string, paths []string, login func() error) (pullRun, error) {
	var run pullRun
	n := fake.n
	leader, _, err := c.roles(ctx)
	if err != nil {
		return run, err
	}
	last := listProbes(n)
	timeout := capiPullTimeout + time.Duration(n)*capiPullPerDecision
	pctx, cancel := context.WithCancel(ctx)
	defer cancel() // on error: stops the load and the watcher
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		run.samples = pacedLoad(pctx, fol, key, paths, capiQueryConns, capiQueryRate, stop)
	}()
	var leaderErr error
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		run.leaderSeen, leaderErr = waitVisible(pctx, leader, key, last, timeout)
	}()
	sleepUntil(ctx, time.Now().Add(200*time.Millisecond))

	b.progress("capi: a machine logs in with scenarios; waiting for %s decisions on follower %s", thousands(float64(n)), fol.name)
	// -profile-dir: the nodes' CPU during the pull (8 s: most of a 1M pull)
	profiled := b.profileNodesFor(ctx, c, "capi-pull", fol, leader, 8)
	defer profiled()
	cpu0 := sampleCPU(0, c.pids()...)
	nodes0 := nodesCPU(c)
	run.login = time.Now()
	if err := login(); err != nil {
		return run, err
	}
	if run.seen, err = waitVisible(pctx, fol, key, last, timeout); err != nil {
		return run, fmt.Errorf("%w; fake CAPI traffic:\n%s", err, fake.String())
	}
	run.other = otherCores(cpu0, sampleCPU(0, c.pids()...), time.Since(run.login))
	run.nodeCPU = showNodesCPU(c, nodes0, nodesCPU(c))
	close(stop)
	<-loadDone
	<-leaderDone
	if leaderErr != nil {
		return run, leaderErr
	}
	streams := fake.Requests(capitest.Stream)
	if len(streams) == 0 {
		return run, fmt.Errorf("the follower has the list but the fake CAPI saw no stream call:\n%s", fake.String())
	}
	run.start = streams[0].Time
	for _, r := range streams {
		if r.Time.Before(run.start) {
			run.start = r.Time
		}
	}
	if dl := fake.Requests(capitest.Blocklist); len(dl) > 0 {
		run.download = dl[0].Time
	}
	return run, nil
}

// serverSide scrapes s's request duration histogram (all routes): the
// count, and the counts within 10 ms and within 50 ms.
func serverSide(ctx context.Context, s *server) [3]float64 {
	const h = "cs_lapi_request_duration_seconds"
	var out [3]float64
	out[0], _ = s.scrape(ctx, h+"_count", "")
	out[1], _ = s.scrape(ctx, h+"_bucket", `le="0.01"`)
	out[2], _ = s.scrape(ctx, h+"_bucket", `le="0.05"`)
	return out
}

// slowest shows the k slowest successful samples sent in [from, to): their
// offset from from and their latency.
func slowest(ss []pacedSample, from, to time.Time, k int) string {
	var in []pacedSample
	for _, s := range ss {
		if !s.err && !s.at.Before(from) && s.at.Before(to) {
			in = append(in, s)
		}
	}
	slices.SortFunc(in, func(a, b pacedSample) int { return int(b.lat - a.lat) })
	var parts []string
	for _, s := range in[:min(k, len(in))] {
		parts = append(parts, fmt.Sprintf("+%s: %s", s.at.Sub(from).Round(time.Millisecond), s.lat.Round(10*time.Microsecond)))
	}
	return strings.Join(parts, ", ")
}

// followerHolds checks that fol's startup stream holds the n decisions of
// the blocklist.
func followerHolds(ctx context.Context, fol *server, key string, n int) error {
	client := fol.client(1, 120*time.Second)
	defer client.CloseIdleConnections()
	got, err := countStream(ctx, client, fol.url, key, fmt.Appendf(nil, `"value":"%d.`, capiNet))
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("the follower's startup stream holds %d decisions of the blocklist, want %d", got, n)
	}
	return nil
}
