package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/halapi/halapi/agent/agentbench"
)

// --------------------------------------------------------------------------
// Phase: what `halapi agent` costs a bouncer (issue 12): a keep-alive
// bouncer query straight to a node and through the agent, in every layout
// of agent/agentbench this machine allows (loopback; pinned: node on one
// CPU, client and agent on the other; netns: pinned, the node behind a
// veth pair in its own network namespace), then the last of them again
// with the node on HTTPS (`<layout>-tls`: direct and agent->node over TLS,
// as deployed). In the pinned and netns layouts a third mode has the
// client on the agent's unix socket (`_sock` lines: what crowdsec's
// apiclient can use; go-cs-bouncer v0.0.21 cannot). The target is judged
// on the layout closest to a bouncer's deployment: the HTTPS run of the
// last layout, the bouncer on the agent's loopback TCP listener.

func (b *bench) phaseAgent(ctx context.Context) error {
	type done struct {
		name string
		r    agentbench.Result
	}
	var got []done
	run := func(l string, tls, socket bool) error {
		name := agentbench.Result{Layout: l, TLS: tls}.Name()
		b.progress("agent: bouncer query direct vs through the agent, layout %s, %d round(s) of %s", name, b.cfg.Runs, b.cfg.Duration)
		rs, err := agentbench.Run(ctx, agentbench.Options{Bin: b.cfg.Bin, Layout: l, Rounds: b.cfg.Runs,
			Duration: b.cfg.Duration, Clients: []int{1}, TLS: tls, Socket: socket, Log: b.log})
		if err != nil {
			if ctx.Err() != nil || l == agentbench.Loopback {
				return fmt.Errorf("layout %s: %w", name, err)
			}
			// pinning or namespaces refused here (a container...): the
			// other layouts still stand
			b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("agent: layout %s failed: %v", name, err))
			return nil
		}
		got = append(got, done{name, rs[0]})
		return nil
	}
	last := agentbench.Loopback
	for _, l := range []string{agentbench.Loopback, agentbench.Pinned, agentbench.Netns} {
		if why := agentbench.Available(l); why != "" {
			b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("agent: layout %s skipped (%s)", l, why))
			continue
		}
		if err := run(l, false, l != agentbench.Loopback); err != nil {
			return err
		}
		last = l
	}
	if err := run(last, true, last != agentbench.Loopback); err != nil {
		return err
	}
	judged := got[len(got)-1].name
	for _, d := range got {
		l, r := d.name, d.r
		key := "agent_" + strings.ReplaceAll(l, "-", "_")
		note := fmt.Sprintf("CPU per request: direct node %.0f µs, client %.0f µs; through the agent node %.0f µs, agent %.0f µs, client %.0f µs",
			r.Direct.NodeCPU, r.Direct.ClientCPU, r.Agent.NodeCPU, r.Agent.AgentCPU, r.Agent.ClientCPU)
		rps := b.rep.add(&metric{Key: key + "_rps", Name: "agent: bouncer query, 1 client, " + l, Unit: unitRPS,
			Value: r.Agent.RPS, Ref: r.Direct.RPS, RefName: "direct", Ratio: r.RPSRatio, Target: ">= 0.8x direct", Note: note})
		p50 := b.rep.add(&metric{Key: key + "_p50", Name: "agent: bouncer query p50, 1 client, " + l, Unit: unitMS,
			Value: ms(r.Agent.P50), Ref: ms(r.Direct.P50), RefName: "direct", Target: "<= 1.25x direct (0.8x)"})
		if l == judged {
			rps.judge(r.RPSRatio >= 0.8)
			p50.judge(p50.Ratio <= 1.25)
		} else {
			rps.Target, p50.Target = "- (judged on "+judged+")", "- (judged on "+judged+")"
		}
		if s := r.Socket; s != nil {
			b.rep.add(&metric{Key: key + "_sock_rps", Name: "agent: bouncer query, 1 client on the agent's socket, " + l, Unit: unitRPS,
				Value: s.RPS, Ref: r.Direct.RPS, RefName: "direct", Ratio: r.SocketRPSRatio, Target: "- (info: go-cs-bouncer cannot use a socket)",
				Note: fmt.Sprintf("CPU per request over the socket: node %.0f µs, agent %.0f µs, client %.0f µs", s.NodeCPU, s.AgentCPU, s.ClientCPU)})
			b.rep.add(&metric{Key: key + "_sock_p50", Name: "agent: bouncer query p50, 1 client on the agent's socket, " + l, Unit: unitMS,
				Value: ms(s.P50), Ref: ms(r.Direct.P50), RefName: "direct", Target: "- (info)"})
		}
	}
	return nil
}
