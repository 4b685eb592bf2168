package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// clusterNet holds the addresses of the single writes of the cluster
	// phase (failover and replication lag).
	clusterNet = 13
	// failoverTimeout bounds the wait for the first write after a kill.
	failoverTimeout = 60 * time.Second
	// lagTimeout bounds the wait for one write to show up on another node.
	lagTimeout = 10 * time.Second
	// failoverRetry is the pause between two write attempts during a
	// failover.
	failoverRetry = 10 * time.Millisecond
)

// oneAlert is the body of a POST /v1/alerts with one agent alert carrying
// one decision on ip.
func oneAlert(ip uint32) []byte {
	b := appendAgentAlert([]byte{'['}, ip, time.Now().UTC().Format(time.RFC3339))
	return append(b, ']')
}

// lookup asks s (as a bouncer) for the decisions on ip and reports whether
// there is one.
func lookup(ctx context.Context, client *http.Client, base, key, ip string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/decisions?ip="+ip, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("X-Api-Key", key)
	req.Header.Set("User-Agent", bouncerUA)
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET /v1/decisions?ip=%s: status %d: %.200s", ip, resp.StatusCode, body)
	}
	return bytes.Contains(body, []byte(`"value":"`+ip+`"`)), nil
}

// --------------------------------------------------------------------------
// Phase: a 3-node cluster (failover, replication lag, follower vs leader).

func (b *bench) phaseCluster(ctx context.Context) error {
	b.progress("cluster: starting 3 nodes (plain HTTP, --insecure-cluster)")
	t0 := time.Now()
	c, err := b.startCluster(ctx, "cluster", "--flush-max-items", "10000000")
	if err != nil {
		return err
	}
	defer c.stop()
	leader, _, err := c.roles(ctx)
	if err != nil {
		return err
	}
	b.progress("cluster: formed in %s, %s leads", time.Since(t0).Round(time.Millisecond), leader.name)
	token, err := leader.addMachine(ctx, "bench-agent")
	if err != nil {
		return err
	}
	key, err := leader.addBouncer(ctx, "bench-bouncer")
	if err != nil {
		return err
	}
	var seq int // index of the next single write in clusterNet
	if err := b.clusterFailover(ctx, c, token, &seq); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	if err := b.clusterLag(ctx, c, token, key, &seq); err != nil {
		return fmt.Errorf("replication lag: %w", err)
	}
	if err := b.clusterQuery(ctx, c, token, key); err != nil {
		return fmt.Errorf("queries: %w", err)
	}
	if err := b.clusterIngest(ctx, c, token, "cluster_ingest", 0.8); err != nil {
		return fmt.Errorf("ingestion: %w", err)
	}
	return nil
}

// clusterFailover kills the leader cfg.Failovers times and times the first
// acknowledged write through a surviving node; the killed node is started
// again (same command line) and the cluster made whole between rounds.
func (b *bench) clusterFailover(ctx context.Context, c *cluster, token string, seq *int) error {
	var times []float64
	var per []string
	for r := 0; r < b.cfg.Failovers; r++ {
		leader, followers, err := c.roles(ctx)
		if err != nil {
			return err
		}
		d, desc, err := failover(ctx, c, leader, followers[r%len(followers)], token, seq)
		if err != nil {
			return err
		}
		times = append(times, d.Seconds())
		per = append(per, desc)
		b.progress("cluster: failover %d/%d: %s", r+1, b.cfg.Failovers, desc)

		t1 := time.Now()
		if err := c.restart(ctx, leader); err != nil {
			return err
		}
		b.progress("cluster: %s back as a follower after %s", leader.name, time.Since(t1).Round(time.Millisecond))
	}
	med := medianOf(times, ident)
	m := b.rep.add(&metric{Key: "cluster_failover_s", Name: fmt.Sprintf("failover: leader SIGKILLed -> write acked (median of %d)", len(times)),
		Unit: unitS, Value: med, Target: "< 2 s"})
	m.judge(med < 2)
	b.rep.Notes = append(b.rep.Notes, "cluster failover (SIGKILL of the leader, writes retried every 10 ms through a surviving follower): "+strings.Join(per, "; "))
	return nil
}

// failover SIGKILLs leader and retries one write through via (on a
// connection opened before the kill) until it is acknowledged: the time
// from the kill, and a description of the round.
func failover(ctx context.Context, c *cluster, leader, via *server, token string, seq *int) (time.Duration, string, error) {
	client := via.client(1, 10*time.Second)
	defer client.CloseIdleConnections()
	// The connection to the survivor is open before the kill.
	if err := postAlerts(ctx, client, via.url, token, oneAlert(benchIP(clusterNet, *seq)), http.StatusCreated); err != nil {
		return 0, "", fmt.Errorf("write through %s before the kill: %w", via.name, err)
	}
	*seq++
	body := oneAlert(benchIP(clusterNet, *seq))
	*seq++

	survivors := c.peersOf(leader)
	cpu0 := sampleCPU(0, survivors...)
	t0 := time.Now()
	if err := c.kill(leader); err != nil {
		return 0, "", err
	}
	attempts, firstErr := 0, ""
	for {
		attempts++
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := postAlerts(actx, client, via.url, token, body, http.StatusCreated)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return 0, "", ctx.Err()
		}
		if firstErr == "" {
			firstErr = err.Error()
		}
		if time.Since(t0) > failoverTimeout {
			return 0, "", fmt.Errorf("no write acknowledged by %s within %s of killing %s (%d attempts, first error: %s)",
				via.name, failoverTimeout, leader.name, attempts, firstErr)
		}
		sleepUntil(ctx, time.Now().Add(failoverRetry))
	}
	d := time.Since(t0)
	other := otherCores(cpu0, sampleCPU(0, survivors...), d)
	desc := fmt.Sprintf("%s killed, write through %s after %s (%d attempt(s), other processes %.2f cores", leader.name, via.name, d.Round(time.Millisecond), attempts, other)
	if firstErr != "" {
		desc += "; first error: " + firstErr
	}
	return d, desc + ")", nil
}

// clusterLag writes one alert at a time, alternately through the leader
// and through a follower, and polls the other follower until it answers
// the new decision: the lag is from the write's acknowledgement to the
// answer of the first poll that shows it.
func (b *bench) clusterLag(ctx context.Context, c *cluster, token, key string, seq *int) error {
	leader, followers, err := c.roles(ctx)
	if err != nil {
		return err
	}
	writers := []*server{leader, followers[0]}
	observer := followers[1]
	wc := []*http.Client{leader.client(1, 10*time.Second), followers[0].client(1, 10*time.Second)}
	oc := observer.client(1, 10*time.Second)
	defer func() {
		for _, cl := range append(wc, oc) {
			cl.CloseIdleConnections()
		}
	}()
	b.progress("cluster: replication lag, %d writes through %s and %s, observed on %s", b.cfg.LagWrites, leader.name, followers[0].name, observer.name)
	var lags, fromLeader, fromFollower, writes []time.Duration
	polls := 0
	cpu0, t0 := sampleCPU(0, c.pids()...), time.Now()
	for k := 0; k < b.cfg.LagWrites; k++ {
		w := k % 2
		ipn := benchIP(clusterNet, *seq)
		*seq++
		ip := ipString(ipn)
		body := oneAlert(ipn)
		tw := time.Now()
		if err := postAlerts(ctx, wc[w], writers[w].url, token, body, http.StatusCreated); err != nil {
			return fmt.Errorf("write through %s: %w", writers[w].name, err)
		}
		ack := time.Now()
		var seen time.Time
		for {
			polls++
			ok, err := lookup(ctx, oc, observer.url, key, ip)
			if err != nil {
				return fmt.Errorf("poll %s: %w", observer.name, err)
			}
			if ok {
				seen = time.Now()
				break
			}
			if time.Since(ack) > lagTimeout {
				return fmt.Errorf("%s written through %s not visible on %s after %s", ip, writers[w].name, observer.name, lagTimeout)
			}
		}
		lag := seen.Sub(ack)
		lags = append(lags, lag)
		writes = append(writes, ack.Sub(tw))
		if w == 0 {
			fromLeader = append(fromLeader, lag)
		} else {
			fromFollower = append(fromFollower, lag)
		}
	}
	other := otherCores(cpu0, sampleCPU(0, c.pids()...), time.Since(t0))
	all := statsOf(lags)
	m := b.rep.add(&metric{Key: "cluster_lag_p99_ms", Name: fmt.Sprintf("replication lag p99 (acked -> visible on a follower, %d writes)", all.N),
		Unit: unitMS, Value: all.P99, Target: "< 50 ms"})
	m.judge(all.P99 < 50)
	b.rep.add(&metric{Key: "cluster_lag_p50_ms", Name: "  replication lag p50", Unit: unitMS, Value: all.P50, Target: "-"})
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("cluster replication lag, from the write's 201 to the first GET /v1/decisions?ip= on %s that shows it "+
		"(polled back to back, %.1f polls per write; a write already there at the first poll counts one poll round trip): written through the leader %s; "+
		"through the other follower %s; write latency %s; other processes used %.2f cores meanwhile",
		observer.name, float64(polls)/float64(len(lags)), statsOf(fromLeader), statsOf(fromFollower), statsOf(writes), other))
	return nil
}

// clusterQuery loads cfg.Decisions decisions and runs the point-query load
// on the leader and on a follower, alternately.
func (b *bench) clusterQuery(ctx context.Context, c *cluster, token, key string) error {
	n := b.cfg.Decisions
	leader, followers, err := c.roles(ctx)
	if err != nil {
		return err
	}
	b.progress("cluster: loading %s decisions through %s", thousands(float64(n)), leader.name)
	loadTime, err := loadDecisions(ctx, leader, token, n)
	if err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		return err
	}
	fol := followers[0]
	if err := checkLookups(ctx, fol, key, n); err != nil {
		return fmt.Errorf("on follower %s: %w", fol.name, err)
	}
	b.progress("cluster: loaded in %s", loadTime.Round(time.Millisecond))
	paths := queryPathList(importNet, n)
	run := func(s *server) func(context.Context) (loadResult, error) {
		return func(ctx context.Context) (loadResult, error) {
			spec := b.querySpec(s.url, nil, key, paths)
			spec.peers = c.peersOf(s)
			return runLoad(ctx, spec, s.pid())
		}
	}
	res, err := b.rounds(ctx, "cluster query", false, []contender{{"leader", run(leader)}, {"follower", run(fol)}}, showQuery)
	if err != nil {
		return err
	}
	lr, fr := res[0], res[1]
	b.rep.Runs["cluster_query_leader"], b.rep.Runs["cluster_query_follower"] = lr, fr
	rps := func(r loadResult) float64 { return r.RPS }
	p50 := func(r loadResult) float64 { return ms(r.P50) }
	ratio := pairedRatio(fr, lr, rps)
	lRPS := medianOf(lr, rps)
	m := b.rep.add(&metric{Key: "cluster_query_rps", Name: fmt.Sprintf("GET /v1/decisions?ip= on a follower (%s decisions, %d conns)", thousands(float64(n)), b.cfg.Conns),
		Unit: unitRPS, Value: medianOf(fr, rps), Ref: lRPS, RefName: "leader", Ratio: ratio,
		Target: fmt.Sprintf(">= 0.95x leader (~%s req/s)", thousands(0.95*lRPS))})
	m.judge(ratio >= 0.95)
	m.Errors = sumErrors(fr) + sumErrors(lr)
	b.rep.add(&metric{Key: "cluster_query_p50_ms", Name: "  latency p50 on a follower", Unit: unitMS, Value: medianOf(fr, p50),
		Ref: medianOf(lr, p50), RefName: "leader", Ratio: balancedRatio(fr, lr, p50), Target: "-"})
	perReq := func(r loadResult) float64 {
		if r.Requests == 0 {
			return 0
		}
		return r.ServerCPU.Seconds() / float64(r.Requests) * 1e6
	}
	peers := func(r loadResult) float64 { return r.PeersCPU.Seconds() / b.cfg.Duration.Seconds() }
	b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("cluster query: CPU per request of the node queried: leader %.1f µs, follower %.1f µs; "+
		"the two other nodes (not queried, no writes) used %.2f cores during the leader's runs, %.2f during the follower's",
		medianOf(lr, perReq), medianOf(fr, perReq), medianOf(lr, peers), medianOf(fr, peers)))
	return nil
}

// clusterIngest pushes alert batches through the leader and through a
// follower (which forwards every write to the leader), alternately, in the
// same cluster: the store grows over the runs, so the order of the two is
// reversed every other round. The figures are reported under keys
// prefix_alerts_per_s and prefix_p50_ms, the first judged against target
// (the follower / leader ratio).
func (b *bench) clusterIngest(ctx context.Context, c *cluster, token, prefix string, target float64) error {
	leader, followers, err := c.roles(ctx)
	if err != nil {
		return err
	}
	fol := followers[0]
	var seq atomic.Int64
	// the group commit on the follower that takes no load, by path:
	// entries and batches its state machine applied during the runs
	var commit [2][2]float64
	run := func(path int, s *server) func(context.Context) (loadResult, error) {
		return func(ctx context.Context) (loadResult, error) {
			spec := b.ingestSpec(s.url, nil, token, &seq)
			spec.peers = c.peersOf(s)
			wait := b.profileNodes(ctx, c, prefix, s, leader)
			defer wait()
			var b0, e0 float64
			if len(followers) > 1 {
				b0, _ = followers[1].scrape(ctx, "halapi_fsm_apply_batches_total", "")
				e0, _ = followers[1].scrape(ctx, "halapi_fsm_applied_entries_total", "")
			}
			r, err := runLoad(ctx, spec, s.pid())
			if len(followers) > 1 && err == nil {
				b1, err1 := followers[1].scrape(ctx, "halapi_fsm_apply_batches_total", "")
				e1, err2 := followers[1].scrape(ctx, "halapi_fsm_applied_entries_total", "")
				if err1 == nil && err2 == nil {
					commit[path][0] += b1 - b0
					commit[path][1] += e1 - e0
				}
			}
			return r, err
		}
	}
	res, err := b.rounds(ctx, "cluster ingest", true, []contender{{"leader", run(0, leader)}, {"follower", run(1, fol)}}, showIngest)
	if err != nil {
		return err
	}
	lr, fr := res[0], res[1]
	b.rep.Runs[prefix+"_leader"], b.rep.Runs[prefix+"_follower"] = lr, fr
	ups := func(r loadResult) float64 { return r.UnitsPerS }
	p50 := func(r loadResult) float64 { return ms(r.P50) }
	// the store grows over the runs: adjacent rounds, run in opposite
	// orders, are paired to cancel that out
	ratio := balancedRatio(fr, lr, ups)
	tgt := fmt.Sprintf(">= %.2gx leader", target)
	if prefix != "cluster_ingest" {
		tgt += " (main before: 0.77-0.86x)"
	}
	m := b.rep.add(&metric{Key: prefix + "_alerts_per_s", Name: fmt.Sprintf("POST /v1/alerts through a follower (%d alerts/batch, %d conns)", alertsPerBatch, b.cfg.IngestConns),
		Unit: unitAlerts, Value: medianOf(fr, ups), Ref: medianOf(lr, ups), RefName: "leader", Ratio: ratio, Target: tgt})
	m.judge(ratio >= target)
	m.Errors = sumErrors(fr) + sumErrors(lr)
	b.rep.add(&metric{Key: prefix + "_p50_ms", Name: "  batch latency p50 through a follower", Unit: unitMS, Value: medianOf(fr, p50),
		Ref: medianOf(lr, p50), RefName: "leader", Ratio: balancedRatio(fr, lr, p50), Target: "-"})
	cpu := func(r loadResult) float64 { return (r.ServerCPU + r.PeersCPU).Seconds() }
	if h := medianOf(fr, ups); h > 0 {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf(prefix+": the 3 nodes together used %.2f cores through the leader, %.2f through a follower (%.0f / %.0f µs of CPU per alert); "+
			"%s alerts sent in all (--flush-max-items 10000000)",
			medianOf(lr, cpu)/b.cfg.Duration.Seconds(), medianOf(fr, cpu)/b.cfg.Duration.Seconds(),
			medianOf(lr, cpu)/(medianOf(lr, ups)*b.cfg.Duration.Seconds())*1e6, medianOf(fr, cpu)/(h*b.cfg.Duration.Seconds())*1e6,
			thousands(float64(seq.Load()))))
	}
	if commit[0][0] > 0 && commit[1][0] > 0 {
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf(prefix+": group commit seen on the follower that takes no load (halapi_fsm_applied_entries_total / halapi_fsm_apply_batches_total): "+
			"%.2f entries per batch through the leader (%.0f batches), %.2f through a follower (%.0f batches)",
			commit[0][1]/commit[0][0], commit[0][0], commit[1][1]/commit[1][0], commit[1][0]))
	}
	return nil
}
