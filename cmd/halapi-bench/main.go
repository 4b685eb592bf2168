// Command halapi-bench measures a built halapi binary against its performance
// targets and prints a report (make bench).
//
// It builds nothing: -bin names the halapi binary. It starts real halapi
// processes on loopback with temporary data dirs, loads data through the
// public HTTP API, measures, and prints each figure beside its target and
// beside a bare Go net/http handler (in this process, on loopback) measured
// in the same run with the same load generator. Targets that are missed are
// reported, not treated as errors: the exit status is 0 unless a measurement
// could not be made.
//
// Phases:
//
//  1. query: N decisions loaded (cscli-import style alerts); GET
//     /v1/decisions?ip= with 32 keep-alive connections, half hits, half
//     misses, runs alternating with the bare handler; then the startup
//     stream (GET /v1/decisions/stream?startup=true), timed to the last byte,
//     beside the bare handler serving the very same bytes.
//  2. ingest: POST /v1/alerts, batches of 50 agent alerts with one decision
//     each, from several connections; each halapi run on a fresh server
//     (--flush-max-items raised so retention does not interfere).
//  3. memory: 1,000,000 decisions loaded into a fresh server; VmRSS right
//     after loading and after an idle pause, the larger reported.
//  4. cluster: 3 nodes on loopback (plain HTTP, --insecure-cluster): the
//     leader SIGKILLed 5 times, each time timing the first acknowledged
//     write through a survivor (the killed node is started again with the
//     same command line in between); replication lag of single writes
//     (acknowledged on the leader or a follower, polled on the other
//     follower); point queries and alert ingestion on a follower beside the
//     same on the leader, runs alternating.
//  5. tls: a node with its default HTTPS (built-in CA) beside one with
//     --plain-http: point queries over keep-alive connections, and over
//     HTTPS with a new connection (full TLS handshake) per request.
//  6. capi: a 3-node cluster whose leader pulls a 100,000-decision
//     blocklist from a fake Central API (capi/capitest, in this process):
//     time from the stream call to the whole list on a follower, and the
//     follower's query latency meanwhile beside the same load when idle.
//  7. scale: the figures of the "Scale" issue (startup storms, a million
//     decisions, 10,000 polling bouncers on a cluster, a million-decision
//     blocklist pull, ingestion through a follower, a new node catching up
//     from a snapshot): see scalebench.go.
//  8. agent: a bouncer query straight to a node and through `halapi agent`
//     (loopback; pinned to two CPUs; node in a network namespace behind a
//     veth pair): see agentbench.go and agent/agentbench.
//  9. ui: the web console's decisions page on a node holding 50,000
//     decisions, timed to the last byte with a signed-in session: see
//     uibench.go.
//
// The machine's CPU use by other processes is sampled during every load run
// (/proc/stat minus this process and the servers); a bare/halapi pair (or
// a round of a comparison) that was disturbed is run again while the
// -retry-budget lasts, and one still disturbed is flagged.
//
// By default the query, ingest and memory phases use plain HTTP (halapi
// gets --plain-http when it has it), like CrowdSec's reference figures;
// -tls measures them over halapi's default HTTPS against a bare handler
// with a self-signed certificate. The cluster and capi phases always use
// plain HTTP, the tls phase both.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is the parsed command line.
type config struct {
	Bin          string          `json:"bin"`
	Duration     time.Duration   `json:"-"`
	Quick        bool            `json:"quick"`
	JSONPath     string          `json:"-"`
	Conns        int             `json:"query_conns"`
	IngestConns  int             `json:"ingest_conns"`
	Runs         int             `json:"runs"`
	StreamRuns   int             `json:"stream_runs"`
	Decisions    int             `json:"decisions"`
	MemDecisions int             `json:"memory_decisions"`
	Idle         time.Duration   `json:"-"`
	Phases       map[string]bool `json:"phases"`
	TLS          bool            `json:"tls"`
	// Cluster phase: leader kills timed, single writes for the lag.
	Failovers int `json:"failovers"`
	LagWrites int `json:"lag_writes"`
	// CAPI phase: size of the blocklist the fake CAPI serves.
	CAPIDecisions int `json:"capi_decisions"`
	// Scale phase.
	StormDecisions     int           `json:"storm_decisions"`
	StormBouncers      int           `json:"storm_bouncers"`
	ScaleDecisions     int           `json:"scale_decisions"`
	SettleBouncers     int           `json:"settle_bouncers"`
	Settle             time.Duration `json:"-"`
	ScaleBouncers      int           `json:"scale_bouncers"`
	PollEvery          time.Duration `json:"-"`
	PollRounds         int           `json:"poll_rounds"`
	ScaleCAPIDecisions int           `json:"scale_capi_decisions"`
	// UI phase: decisions held, timed fetches of the console page.
	UIDecisions int `json:"ui_decisions"`
	UIRuns      int `json:"ui_runs"`
	// ScaleBulkOnly runs only the scale phase's blocklist pull and
	// catch-up steps (5 and 6).
	ScaleBulkOnly bool `json:"scale_bulk_only,omitempty"`
	// ScalePinnedOnly runs only the scale phase's pull on the pinned
	// layout (follower alone on a CPU).
	ScalePinnedOnly bool `json:"scale_pinned_only,omitempty"`
	// PinnedProcs is GOMAXPROCS for the pinned layout's nodes: what halapi
	// serve runs with on a one-CPU host (2) unless set otherwise.
	PinnedProcs int `json:"pinned_procs"`
	// ProfileDir, when set, receives CPU profiles of every node during
	// the cluster ingestion runs.
	ProfileDir string `json:"profile_dir,omitempty"`
	// ScaleMemoryOnly runs only the scale phase's single-server steps
	// (storm, idle RSS, stream, RSS after a storm), not the cluster.
	ScaleMemoryOnly bool `json:"scale_memory_only,omitempty"`
	// RetryBudget bounds the time spent redoing disturbed load runs.
	RetryBudget time.Duration `json:"-"`
}

var allPhases = []string{"query", "ingest", "memory", "cluster", "tls", "capi", "scale", "agent", "ui"}

// extraPhases are accepted by -phases but not run by default: scale-stream
// is the scale phase's storm and startup-stream steps alone (scalestream.go).
var extraPhases = []string{"scale-stream"}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain parses args, runs the benchmark, prints the report on stdout
// (progress goes to stderr) and returns the exit status.
func realMain(args []string, stdout, stderr io.Writer) int {
	cfg, code := parseConfig(args, stderr)
	if code >= 0 {
		return code
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	rep, err := run(ctx, cfg, stderr)
	if rep != nil {
		rep.print(stdout)
		if cfg.JSONPath != "" {
			if werr := rep.writeJSON(cfg.JSONPath); werr != nil {
				fmt.Fprintf(stderr, "halapi-bench: write %s: %v\n", cfg.JSONPath, werr)
				if err == nil {
					err = werr
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "halapi-bench: %v\n", err)
		return 1
	}
	return 0
}

// parseConfig parses the command line; code is the exit status when the
// run must stop here (help, bad flags), -1 otherwise.
func parseConfig(args []string, stderr io.Writer) (cfg config, code int) {
	fs := flag.NewFlagSet("halapi-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Bin, "bin", "", "path of the halapi binary to measure (required)")
	fs.DurationVar(&cfg.Duration, "duration", 5*time.Second, "length of each measured load run (-quick: 2s)")
	fs.BoolVar(&cfg.Quick, "quick", false, "smaller run for smoke tests: 10,000 decisions, 100,000 for memory, 10,000 for capi, 2s runs, 1 run per load phase, 1 failover, 40 lag writes")
	fs.StringVar(&cfg.JSONPath, "json", "", "also write the results as JSON to this file")
	fs.BoolVar(&cfg.TLS, "tls", false, "run the query, ingest and memory phases over HTTPS: halapi with its built-in CA (its default), the bare handler with a self-signed certificate (default: plain HTTP, as CrowdSec's reference figures; the tls phase measures both anyway)")
	fs.IntVar(&cfg.Conns, "conns", 32, "concurrent keep-alive connections for the query load")
	fs.IntVar(&cfg.IngestConns, "ingest-conns", 8, "concurrent connections pushing alert batches")
	fs.IntVar(&cfg.Runs, "runs", 3, "runs per load phase (the median is reported; -quick: 1)")
	fs.IntVar(&cfg.StreamRuns, "stream-runs", 7, "timed startup stream fetches (median reported)")
	fs.IntVar(&cfg.Decisions, "decisions", 50000, "decisions loaded for the query and stream phases (-quick: 10,000)")
	fs.IntVar(&cfg.MemDecisions, "memory-decisions", 1000000, "decisions loaded for the memory phase (-quick: 100,000)")
	fs.DurationVar(&cfg.Idle, "idle", 5*time.Second, "idle pause before the second RSS reading (-quick: 2s)")
	fs.DurationVar(&cfg.RetryBudget, "retry-budget", 60*time.Second, "total time the whole run may spend redoing load runs disturbed by other processes (-quick: 0)")
	fs.IntVar(&cfg.Failovers, "failovers", 5, "cluster phase: times the leader is killed (the median failover time is reported; -quick: 1)")
	fs.IntVar(&cfg.LagWrites, "lag-writes", 400, "cluster phase: single writes timed until visible on another node (-quick: 40)")
	fs.IntVar(&cfg.CAPIDecisions, "capi-decisions", 100000, "capi phase: decisions in the blocklist the fake CAPI serves (-quick: 10,000)")
	fs.IntVar(&cfg.StormDecisions, "storm-decisions", 300000, "scale phase: decisions held when the storm of startups hits (-quick: 10,000)")
	fs.IntVar(&cfg.StormBouncers, "storm-bouncers", 100, "scale phase: bouncers asking for the startup stream at once (-quick: 10)")
	fs.IntVar(&cfg.ScaleDecisions, "scale-decisions", 1000000, "scale phase: decisions for the idle RSS, the startup stream and the RSS after a storm (-quick: 20,000)")
	fs.IntVar(&cfg.SettleBouncers, "settle-bouncers", 20, "scale phase: startups at once on -scale-decisions before the -settle pause (-quick: 5)")
	fs.DurationVar(&cfg.Settle, "settle", time.Minute, "scale phase: pause after the storm on -scale-decisions before RSS is read (-quick: 1s)")
	fs.IntVar(&cfg.ScaleBouncers, "scale-bouncers", 10000, "scale phase: bouncers polling the stream on a 3-node cluster (-quick: 150)")
	fs.DurationVar(&cfg.PollEvery, "poll-every", 10*time.Second, "scale phase: interval of each bouncer's polls (-quick: 1s)")
	fs.IntVar(&cfg.PollRounds, "poll-rounds", 3, "scale phase: measured polling rounds after the startup round (-quick: 2)")
	fs.IntVar(&cfg.ScaleCAPIDecisions, "scale-capi-decisions", 1000000, "scale phase: decisions in the blocklist pulled by the cluster, then in the snapshot a new node catches up from (-quick: 10,000)")
	fs.IntVar(&cfg.UIDecisions, "ui-decisions", 50000, "ui phase: decisions held by the node whose console page is timed (-quick: 10,000)")
	fs.IntVar(&cfg.UIRuns, "ui-runs", 21, "ui phase: timed fetches of the console's decisions page (the median is reported; -quick: 5)")
	fs.IntVar(&cfg.PinnedProcs, "pinned-procs", 2, "scale phase: GOMAXPROCS of the pinned layout's nodes (2: what halapi serve runs with on a one-CPU host; 1: the Go runtime's default there)")
	fs.StringVar(&cfg.ProfileDir, "profile-dir", "", "cluster and scale phases: write a CPU profile of every node during each ingestion run into this directory (halapi debug profile; the profiles cost the nodes a little CPU)")
	fs.BoolVar(&cfg.ScalePinnedOnly, "scale-pinned-only", false, "scale phase: run only the blocklist pull with the queried follower pinned to its own CPU")
	fs.BoolVar(&cfg.ScaleBulkOnly, "scale-bulk-only", false, "scale phase: run only the big blocklist pull and the new node catching up (steps 5 and 6)")
	fs.BoolVar(&cfg.ScaleMemoryOnly, "scale-memory-only", false, "scale phase: only the single-server steps (storms, idle RSS with a million decisions, startup stream, RSS after a storm), not the 3-node cluster")
	phases := fs.String("phases", strings.Join(allPhases, ","), "comma-separated phases to run: query (point queries, stream), ingest, memory, "+
		"cluster (3 nodes: failover, replication lag, follower vs leader), tls (HTTPS vs plain HTTP, handshakes), capi (blocklist pull), "+
		"scale (startup storms, a million decisions, thousands of polling bouncers, big blocklist, catching up), "+
		"agent (the agent's overhead on a bouncer query), ui (the web console's decisions page on 50,000 decisions); not by default: scale-stream (the scale phase's storm and startup stream only)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: halapi-bench -bin PATH [flags]\n\nMeasures a halapi binary against its performance targets.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, 0
		}
		return cfg, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "halapi-bench: unexpected arguments %q\n", fs.Args())
		return cfg, 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.Quick {
		quick := map[string]func(){
			"duration":             func() { cfg.Duration = 2 * time.Second },
			"runs":                 func() { cfg.Runs = 1 },
			"decisions":            func() { cfg.Decisions = 10000 },
			"memory-decisions":     func() { cfg.MemDecisions = 100000 },
			"idle":                 func() { cfg.Idle = 2 * time.Second },
			"failovers":            func() { cfg.Failovers = 1 },
			"retry-budget":         func() { cfg.RetryBudget = 0 },
			"lag-writes":           func() { cfg.LagWrites = 40 },
			"capi-decisions":       func() { cfg.CAPIDecisions = 10000 },
			"storm-decisions":      func() { cfg.StormDecisions = 10000 },
			"storm-bouncers":       func() { cfg.StormBouncers = 10 },
			"scale-decisions":      func() { cfg.ScaleDecisions = 20000 },
			"settle-bouncers":      func() { cfg.SettleBouncers = 5 },
			"settle":               func() { cfg.Settle = time.Second },
			"scale-bouncers":       func() { cfg.ScaleBouncers = 150 },
			"poll-every":           func() { cfg.PollEvery = time.Second },
			"poll-rounds":          func() { cfg.PollRounds = 2 },
			"scale-capi-decisions": func() { cfg.ScaleCAPIDecisions = 10000 },
			"ui-runs":              func() { cfg.UIRuns = 5 },
			"ui-decisions":         func() { cfg.UIDecisions = 10000 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	cfg.Phases = map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if !slices.Contains(allPhases, p) && !slices.Contains(extraPhases, p) {
			fmt.Fprintf(stderr, "halapi-bench: unknown phase %q (want %s)\n", p, strings.Join(allPhases, ", "))
			return cfg, 2
		}
		cfg.Phases[p] = true
	}
	if len(cfg.Phases) == 0 {
		fmt.Fprintln(stderr, "halapi-bench: -phases selects nothing")
		return cfg, 2
	}
	if err := cfg.check(); err != nil {
		fmt.Fprintf(stderr, "halapi-bench: %v\n", err)
		return cfg, 2
	}
	return cfg, -1
}

func (c *config) check() error {
	if c.Bin == "" {
		return errors.New("-bin is required (path of a built halapi binary)")
	}
	st, err := os.Stat(c.Bin)
	if err != nil {
		return fmt.Errorf("-bin: %w", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("-bin: %s is not an executable file", c.Bin)
	}
	if c.ProfileDir != "" {
		if c.ProfileDir, err = filepath.Abs(c.ProfileDir); err == nil {
			err = os.MkdirAll(c.ProfileDir, 0o755)
		}
		if err != nil {
			return fmt.Errorf("-profile-dir: %w", err)
		}
	}
	switch {
	case c.Duration <= 0:
		return errors.New("-duration must be > 0")
	case c.Conns <= 0 || c.IngestConns <= 0:
		return errors.New("-conns and -ingest-conns must be > 0")
	case c.Runs <= 0 || c.StreamRuns <= 0:
		return errors.New("-runs and -stream-runs must be > 0")
	case c.Decisions <= 0 || c.MemDecisions <= 0:
		return errors.New("-decisions and -memory-decisions must be > 0")
	case c.Decisions > ipSpace/2 || c.MemDecisions > ipSpace/2:
		return fmt.Errorf("at most %d decisions", ipSpace/2)
	case c.Idle < 0:
		return errors.New("-idle must be >= 0")
	case c.RetryBudget < 0:
		return errors.New("-retry-budget must be >= 0")
	case c.Failovers <= 0 || c.LagWrites <= 0:
		return errors.New("-failovers and -lag-writes must be > 0")
	case c.CAPIDecisions <= 0 || c.CAPIDecisions > ipSpace/2 || c.ScaleCAPIDecisions <= 0 || c.ScaleCAPIDecisions > ipSpace/2:
		return fmt.Errorf("-capi-decisions and -scale-capi-decisions must be in 1..%d", ipSpace/2)
	case c.StormDecisions <= 0 || c.ScaleDecisions < c.StormDecisions || c.ScaleDecisions > ipSpace/2:
		return fmt.Errorf("-storm-decisions must be > 0 and <= -scale-decisions <= %d", ipSpace/2)
	case c.StormBouncers <= 0 || c.SettleBouncers <= 0 || c.ScaleBouncers <= 0:
		return errors.New("-storm-bouncers, -settle-bouncers and -scale-bouncers must be > 0")
	case c.Settle < 0 || c.PollEvery <= 0 || c.PollRounds <= 0:
		return errors.New("-settle must be >= 0, -poll-every and -poll-rounds > 0")
	case c.UIDecisions <= 0 || c.UIDecisions > ipSpace/2 || c.UIRuns <= 0:
		return fmt.Errorf("-ui-decisions must be in 1..%d, -ui-runs > 0", ipSpace/2)
	}
	return nil
}

// warmup is the unmeasured start of each load run.
func (c *config) warmup() time.Duration {
	return min(time.Second, c.Duration/5)
}
