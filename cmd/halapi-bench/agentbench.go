package main

import (
	"context"
	"fmt"

	"github.com/halapi/halapi/agent/agentbench"
)

// --------------------------------------------------------------------------
// Phase: what `halapi agent` costs a bouncer (issue 12): a keep-alive
// bouncer query straight to a node and through the agent, in every layout
// of agent/agentbench this machine allows (loopback; pinned: node on one
// CPU, client and agent on the other; netns: pinned, the node behind a
// veth pair in its own network namespace). The target is judged on the
// layout closest to a deployment (netns, else pinned): there the agent
// shares the client's host, not the node's.

func (b *bench) phaseAgent(ctx context.Context) error {
	type done struct {
		layout string
		r      agentbench.Result
	}
	var got []done
	for _, l := range []string{agentbench.Loopback, agentbench.Pinned, agentbench.Netns} {
		if why := agentbench.Available(l); why != "" {
			b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("agent: layout %s skipped (%s)", l, why))
			continue
		}
		b.progress("agent: bouncer query direct vs through the agent, layout %s, %d round(s) of %s", l, b.cfg.Runs, b.cfg.Duration)
		rs, err := agentbench.Run(ctx, agentbench.Options{Bin: b.cfg.Bin, Layout: l, Rounds: b.cfg.Runs,
			Duration: b.cfg.Duration, Clients: []int{1}, Log: b.log})
		if err != nil {
			if ctx.Err() != nil || l == agentbench.Loopback {
				return fmt.Errorf("layout %s: %w", l, err)
			}
			// pinning or namespaces refused here (a container...): the
			// other layouts still stand
			b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("agent: layout %s failed: %v", l, err))
			continue
		}
		got = append(got, done{l, rs[0]})
	}
	judged := got[len(got)-1].layout
	for _, d := range got {
		l, r := d.layout, d.r
		note := fmt.Sprintf("CPU per request: direct node %.0f µs, client %.0f µs; through the agent node %.0f µs, agent %.0f µs, client %.0f µs",
			r.Direct.NodeCPU, r.Direct.ClientCPU, r.Agent.NodeCPU, r.Agent.AgentCPU, r.Agent.ClientCPU)
		rps := b.rep.add(&metric{Key: "agent_" + l + "_rps", Name: "agent: bouncer query, 1 client, " + l, Unit: unitRPS,
			Value: r.Agent.RPS, Ref: r.Direct.RPS, RefName: "direct", Ratio: r.RPSRatio, Target: ">= 0.8x direct", Note: note})
		p50 := b.rep.add(&metric{Key: "agent_" + l + "_p50", Name: "agent: bouncer query p50, 1 client, " + l, Unit: unitMS,
			Value: ms(r.Agent.P50), Ref: ms(r.Direct.P50), RefName: "direct", Target: "<= 1.25x direct (0.8x)"})
		if l == judged {
			rps.judge(r.RPSRatio >= 0.8)
			p50.judge(p50.Ratio <= 1.25)
		} else {
			rps.Target, p50.Target = "- (judged on "+judged+")", "- (judged on "+judged+")"
		}
	}
	return nil
}
