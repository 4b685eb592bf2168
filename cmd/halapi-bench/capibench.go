package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	// capiPullTimeout bounds the wait for the whole list on the follower.
	capiPullTimeout = 3 * time.Minute
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

// waitVisible polls s for ip every capiPollEvery until it answers a
// decision, and returns when.
func waitVisible(ctx context.Context, s *server, key, ip string, timeout time.Duration) (time.Time, error) {
	client := s.client(1, 10*time.Second)
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := lookup(ctx, client, s.url, key, ip)
		if err != nil {
			return time.Time{}, err
		}
		if ok {
			return time.Now(), nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s not visible on %s within %s", ip, s.name, timeout)
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

func (b *bench) phaseCAPI(ctx context.Context) error {
	n := b.cfg.CAPIDecisions
	fake := capitest.New()
	defer fake.Close()
	login, password := "bench-"+randomHex(8), randomHex(16)
	fake.AddWatcher(login, password)
	creds := filepath.Join(b.tmp, "online_api_credentials.yaml")
	if err := os.WriteFile(creds, fmt.Appendf(nil, "url: %s\nlogin: %s\npassword: %s\n", fake.BaseURL(), login, password), 0o600); err != nil {
		return err
	}
	values := make([]string, n)
	for i := range values {
		values[i] = ipString(benchIP(capiNet, i))
	}
	fake.SetBlocklist(capiList, values)
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{
		fake.BlocklistLink(capiList, "ban", "Ip", "24h")}}})

	b.progress("capi: starting 3 nodes with CAPI credentials for a fake CAPI serving a %s-decision blocklist", thousands(float64(n)))
	c, err := b.startCluster(ctx, "capi", "--capi-credentials", creds, "--capi-pull-interval", "1h",
		"--capi-push-interval", "1h", "--capi-metrics-interval", "1h")
	if err != nil {
		return err
	}
	defer c.stop()
	leader, followers, err := c.roles(ctx)
	if err != nil {
		return err
	}
	fol := followers[0]
	key, err := leader.addBouncer(ctx, "bench-bouncer")
	if err != nil {
		return err
	}
	agentPW := randomHex(16)
	if _, err := leader.cliWrite(ctx, "machines", "add", "bench-agent", "--password", agentPW); err != nil {
		return err
	}
	if got := fake.Count(capitest.Stream); got != 0 {
		return fmt.Errorf("the leader pulled before any machine had scenarios (%d stream calls)", got)
	}

	// The bouncer load on the follower and the pollers run from before the
	// pull until the follower has the whole list.
	paths := queryPathList(capiNet, n)
	last := ipString(benchIP(capiNet, n-1))
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	var samples []pacedSample
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		samples = pacedLoad(pctx, fol, key, paths, capiQueryConns, capiQueryRate, stop)
	}()
	var leaderSeen time.Time
	var leaderErr error
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		leaderSeen, leaderErr = waitVisible(pctx, leader, key, last, capiPullTimeout)
	}()
	sleepUntil(ctx, time.Now().Add(200*time.Millisecond))

	// An agent logs in with its scenarios: that unlocks the pull.
	b.progress("capi: a machine logs in with scenarios; waiting for %s decisions on follower %s", thousands(float64(n)), fol.name)
	cpu0, tLogin := sampleCPU(0, c.pids()...), time.Now()
	if _, err := leader.login(ctx, "bench-agent", agentPW, []string{"crowdsecurity/ssh-bf", "crowdsecurity/http-probing"}); err != nil {
		return err // the deferred cancel stops the load and the poller
	}
	seen, err := waitVisible(pctx, fol, key, last, capiPullTimeout)
	if err != nil {
		return fmt.Errorf("%w; fake CAPI traffic:\n%s", err, fake.String())
	}
	other := otherCores(cpu0, sampleCPU(0, c.pids()...), time.Since(tLogin))
	close(stop)
	<-loadDone
	<-leaderDone
	if leaderErr != nil {
		return leaderErr
	}
	streams := fake.Requests(capitest.Stream)
	if len(streams) == 0 {
		return fmt.Errorf("the follower has the list but the fake CAPI saw no stream call:\n%s", fake.String())
	}
	pullStart := streams[0].Time
	for _, r := range streams {
		if r.Time.Before(pullStart) {
			pullStart = r.Time
		}
	}
	var download time.Time
	if dl := fake.Requests(capitest.Blocklist); len(dl) > 0 {
		download = dl[0].Time
	}
	pull := seen.Sub(pullStart)
	during, duringErrs := window(samples, pullStart, seen)
	b.progress("capi: stream call %s after the login; list on the leader after %s, on the follower after %s",
		pullStart.Sub(tLogin).Round(time.Millisecond), leaderSeen.Sub(pullStart).Round(time.Millisecond), pull.Round(time.Millisecond))

	// Every decision is on the follower.
	client := fol.client(1, 60*time.Second)
	body, _, err := fetchStream(ctx, client, fol.url, key)
	client.CloseIdleConnections()
	if err != nil {
		return err
	}
	if got := bytes.Count(body, fmt.Appendf(nil, `"value":"%d.`, capiNet)); got != n {
		return fmt.Errorf("the follower's startup stream holds %d decisions of the blocklist, want %d", got, n)
	}

	// The same load when nothing is applied.
	sleepUntil(ctx, time.Now().Add(time.Second))
	idleFrom := time.Now()
	stop = make(chan struct{})
	time.AfterFunc(b.cfg.Duration, func() { close(stop) })
	idleSamples := pacedLoad(ctx, fol, key, paths, capiQueryConns, capiQueryRate, stop)
	if err := ctx.Err(); err != nil {
		return err
	}
	idle, idleErrs := window(idleSamples, idleFrom, time.Now())
	ds, is := statsOf(during), statsOf(idle)

	nd := thousands(float64(n))
	b.rep.add(&metric{Key: "capi_pull_s", Name: fmt.Sprintf("CAPI pull, %s-decision blocklist: stream call -> all on a follower", nd),
		Unit: unitS, Value: pull.Seconds(), Target: "-"})
	qm := b.rep.add(&metric{Key: "capi_query_p99_ms", Name: fmt.Sprintf("  query p99 on the follower meanwhile (%d req/s)", capiQueryRate), Unit: unitMS,
		Value: ds.P99, Ref: is.P99, RefName: "idle", Target: "-"})
	qm.Errors = int64(duringErrs + idleErrs)
	dl := "no blocklist download recorded"
	if !download.IsZero() {
		dl = fmt.Sprintf("blocklist download at +%s", download.Sub(pullStart).Round(time.Millisecond))
	}
	b.rep.Notes = append(b.rep.Notes,
		fmt.Sprintf("capi: the leader's first stream call came %s after the agent's login (the pull waits for a machine with scenarios); %s; "+
			"last decision of the list answered by the leader at +%s, by follower %s at +%s (polled every %s); %s decisions in the follower's startup stream; "+
			"other processes used %.2f cores meanwhile",
			pullStart.Sub(tLogin).Round(time.Millisecond), dl, leaderSeen.Sub(pullStart).Round(time.Millisecond), fol.name,
			pull.Round(time.Millisecond), capiPollEvery, nd, other),
		fmt.Sprintf("capi: follower queries (%d connections, %d req/s in all, half hits): during the apply %s; idle afterwards (%s) %s",
			capiQueryConns, capiQueryRate, ds, b.cfg.Duration, is))
	return nil
}
