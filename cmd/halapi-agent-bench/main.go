// Command halapi-agent-bench measures what `halapi agent` costs a bouncer:
// a real node (halapi serve, plain HTTP) and a real agent in front of it,
// and the bouncer query GET /v1/decisions?ip=… with keep-alive, sent
// directly and through the agent in alternating rounds, in one or more
// layouts (agent/agentbench: loopback, pinned, netns). It prints requests
// per second, latency percentiles and CPU time per request of each
// process, for both, and the ratio agent/direct; with -socket also for a
// client on the agent's unix socket, with -tls against an HTTPS node.
//
//	go run ./cmd/halapi-agent-bench -bin bin/halapi -layouts loopback,pinned,netns
//	go run ./cmd/halapi-agent-bench -bin bin/halapi -layouts pinned,netns -tls -socket -clients 1
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/halapi/halapi/agent/agentbench"
)

func main() {
	agentbench.ServeBareRelayIfAsked()
	bin := flag.String("bin", "bin/halapi", "halapi binary")
	rounds := flag.Int("rounds", 5, "alternating rounds of each mode (medians reported)")
	dur := flag.Duration("duration", 3*time.Second, "length of one round")
	clients := flag.String("clients", "1,4", "comma-separated client counts")
	layouts := flag.String("layouts", "loopback,pinned,netns", "comma-separated layouts: loopback, pinned, netns (one that cannot run here is skipped)")
	useTLS := flag.Bool("tls", false, "the node serves HTTPS (its built-in CA): direct and agent->node over TLS, as deployed")
	perf := flag.Bool("perf", false, "also count syscalls, context switches and wake-ups per request of each process (perf stat; root)")
	perfEvents := flag.String("perf-events", "", "with -perf: more perf events, comma-separated (e.g. syscalls:sys_enter_read,syscalls:sys_enter_futex)")
	bare := flag.Bool("bare-relay", false, "measure a bare relay (io.Copy both ways, no HTTP) in place of the agent: the floor of any proxy")
	socket := flag.Bool("socket", false, "also measure the client on the agent's unix socket (--socket)")
	agentArgs := flag.String("agent-args", "", "extra `halapi agent run` flags, space-separated (e.g. \"--procs 2\")")
	jsonPath := flag.String("json", "", "also write the results as JSON to this file")
	vip := flag.Int("vip", 0, "instead: emulate a virtual IP moving this many times (agentbench.VIP; needs root) and print what the client saw")
	vipMove := flag.Duration("vip-move-after", 500*time.Millisecond, "with -vip: time between the holder's host going down and the address moving")
	flag.Parse()
	if *vip > 0 {
		os.Exit(runVIP(*bin, *vip, *vipMove))
	}
	var cs []int
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "Error: -clients: %q is not a positive number\n", s)
			os.Exit(2)
		}
		cs = append(cs, n)
	}
	if *rounds < 1 || *dur <= 0 {
		fmt.Fprintln(os.Stderr, "Error: -rounds and -duration must be positive")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", b)
	}
	var all []agentbench.Result
	failed := false
	for _, l := range strings.Split(*layouts, ",") {
		l = strings.TrimSpace(l)
		if why := agentbench.Available(l); why != "" {
			fmt.Printf("%s: skipped (%s)\n", l, why)
			continue
		}
		rs, err := agentbench.Run(ctx, agentbench.Options{Bin: *bin, Layout: l, Rounds: *rounds, Duration: *dur,
			Clients: cs, AgentArgs: strings.Fields(*agentArgs), TLS: *useTLS, Socket: *socket, Perf: *perf, PerfEvents: splitList(*perfEvents), BareRelay: *bare, Log: os.Stderr})
		if err != nil {
			fmt.Fprintf(os.Stderr, "Error: %s: %v\n", l, err)
			failed = true
			continue
		}
		agentbench.Format(os.Stdout, rs)
		all = append(all, rs...)
	}
	if *jsonPath != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(*jsonPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "Error:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

func runVIP(bin string, times int, moveAfter time.Duration) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for i := range times {
		r, err := agentbench.VIP(ctx, bin, moveAfter, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "Error:", err)
			return 1
		}
		fmt.Printf("vip %d: host down, address moved %v later; first answer %v after the move; %d failed request(s) %q\n",
			i+1, r.MoveAfter, r.FirstOK.Round(time.Millisecond), r.Failed, r.Errors)
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
