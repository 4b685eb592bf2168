package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/halapi/halapi/capi"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// capiFlags are the `serve` flags of the Central API link.
type capiFlags struct {
	fl *pflag.FlagSet

	url                 string
	credentials         string
	disable             bool
	register            bool
	pullInterval        time.Duration
	pushInterval        time.Duration
	metricsInterval     time.Duration
	sharing             bool
	pullCommunity       bool
	pullBlocklists      bool
	disableUsageMetrics bool
	console             capi.ConsoleOptions
}

// bindCAPIFlags adds the CAPI flags to serve's flag set.
func bindCAPIFlags(fl *pflag.FlagSet, f *capiFlags) {
	d := capi.DefaultConfig()
	f.fl = fl
	fl.StringVar(&f.url, "capi-url", d.URL, "Central API base URL (must end with '/'); used to register, and instead of the stored credentials' URL when given")
	fl.StringVar(&f.credentials, "capi-credentials", "", "online_api_credentials.yaml to import into the cluster (once per content)")
	fl.BoolVar(&f.disable, "capi-disable", false, "disable every Central API activity (no push, no pull, no metrics)")
	fl.BoolVar(&f.register, "capi-register", false, "register with the Central API on first leadership when the cluster has no CAPI credentials")
	fl.DurationVar(&f.pullInterval, "capi-pull-interval", d.PullInterval, "community blocklist pull interval")
	fl.DurationVar(&f.pushInterval, "capi-push-interval", d.PushInterval, "signal push interval")
	fl.DurationVar(&f.metricsInterval, "capi-metrics-interval", d.MetricsInterval, "metrics and usage-metrics interval")
	fl.BoolVar(&f.sharing, "capi-sharing", d.Sharing, "push signals (alerts) to the Central API")
	fl.BoolVar(&f.pullCommunity, "capi-pull-community", d.PullCommunity, "pull the community blocklist")
	fl.BoolVar(&f.pullBlocklists, "capi-pull-blocklists", d.PullBlocklists, "pull subscribed third-party blocklists")
	fl.BoolVar(&f.disableUsageMetrics, "capi-disable-usage-metrics", d.DisableUsageMetrics, "do not send usage metrics")
	fl.BoolVar(&f.console.ShareManualDecisions, "console-share-manual-decisions", d.Console.ShareManualDecisions, "share alerts of manual (cscli) decisions")
	fl.BoolVar(&f.console.ShareCustom, "console-share-custom", d.Console.ShareCustom, "share alerts of custom scenarios")
	fl.BoolVar(&f.console.ShareTainted, "console-share-tainted", d.Console.ShareTainted, "share alerts of tainted (modified) scenarios")
	fl.BoolVar(&f.console.ShareContext, "console-share-context", d.Console.ShareContext, "include alert context (meta) in signals")
	fl.BoolVar(&f.console.ConsoleManagement, "console-management", d.Console.ConsoleManagement, "console management option (reported to CAPI; PAPI itself is not supported)")
}

// capiConfig turns the flags into a service configuration.
func capiConfig(f capiFlags) (capi.Config, error) {
	cfg := capi.DefaultConfig()
	cfg.Disabled = f.disable
	if f.disable {
		return cfg, nil
	}
	if f.url != "" {
		cfg.URL = f.url
	}
	cfg.OverrideURL = f.fl != nil && f.fl.Changed("capi-url")
	if f.credentials != "" {
		c, err := capi.LoadCredentials(f.credentials)
		if err != nil {
			return cfg, fmt.Errorf("--capi-credentials: %w", err)
		}
		cfg.Credentials = &c
	}
	cfg.Register = f.register
	for name, v := range map[string]time.Duration{"--capi-pull-interval": f.pullInterval,
		"--capi-push-interval": f.pushInterval, "--capi-metrics-interval": f.metricsInterval} {
		if v <= 0 {
			return cfg, fmt.Errorf("%s must be > 0", name)
		}
	}
	cfg.SetIntervals(f.pullInterval, f.pushInterval, f.metricsInterval)
	cfg.Sharing, cfg.PullCommunity, cfg.PullBlocklists = f.sharing, f.pullCommunity, f.pullBlocklists
	cfg.DisableUsageMetrics = f.disableUsageMetrics
	cfg.Console = f.console
	return cfg, cfg.Validate()
}

// startCAPI builds the CAPI service and hooks it to leadership changes:
// its loops run only while this node is the raft leader.
func startCAPI(f capiFlags, machine *fsm.FSM, node *cluster.Node, logger *slog.Logger) (*capi.Service, error) {
	cfg, err := capiConfig(f)
	if err != nil {
		return nil, err
	}
	cfg.Cluster = func(ctx context.Context) (self, leader, leaderAPI string) {
		st := node.Status(ctx)
		for _, m := range st.Members {
			if m.ID == st.Leader {
				leaderAPI = m.APIURL
			}
		}
		return st.NodeID, st.Leader, leaderAPI
	}
	svc := capi.New(cfg, machine, node, logger)
	if !cfg.Disabled {
		node.AddLeaderJob(cluster.LeaderJob{Name: "capi-sync", Run: svc.RunLeader})
	}
	if cfg.Disabled {
		logger.Info("CAPI disabled (--capi-disable)")
	}
	return svc, nil
}

func capiCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "capi", Short: "Central API (CAPI) link: status and registration"}
	o.bind(c)
	status := &cobra.Command{
		Use: "status", Short: "Show the CAPI link state (any node answers; the leader adds live details)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var st capi.StatusView
			if err := o.call("GET", "/capi/status", nil, nil, &st); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(st)
			}
			printCAPIStatus(st)
			return nil
		},
	}
	var force bool
	register := &cobra.Command{
		Use: "register", Short: "Register the cluster with the Central API (done by the leader)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var out capi.RegisterResponse
			if err := o.call("POST", "/capi/register", nil, map[string]bool{"force": force}, &out); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(out)
			}
			fmt.Println(out.Message)
			return nil
		},
	}
	register.Flags().BoolVar(&force, "force", false, "register new credentials even if the cluster has some")
	c.AddCommand(status, register, capiEnrollCmd(o), capiCredentialsCmd(o))
	return c
}

func fmtOptTime(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Local().Format(time.RFC3339)
}

func printCAPIStatus(st capi.StatusView) {
	line := func(k, v string) { fmt.Printf("%-22s %s\n", k+":", v) }
	line("State", st.State)
	if st.Node != "" {
		line("This node", st.Node)
	}
	leader := st.Leader
	if leader == "" {
		leader = "none (no quorum?)"
	} else if st.LeaderAPI != "" {
		leader += " (" + st.LeaderAPI + ")"
	}
	line("Leader (runs CAPI)", leader)
	if !st.Enabled {
		return
	}
	if st.Active {
		line("Running here since", fmtOptTime(st.ActiveSince))
	} else if st.Leader != "" && st.Leader != st.Node {
		fmt.Printf("(replicated state only; ask the leader %s for live errors)\n", st.Leader)
	}
	creds := "none"
	if st.Login != "" {
		creds = st.Login + " @ " + st.URL + " (" + st.CredentialsSource + ")"
	}
	line("Credentials", creds)
	if st.RegisterPending {
		msg := "pending"
		if st.RegisterError != "" {
			msg += ": " + st.RegisterError
		}
		line("Registration", msg)
	}
	tok := "none"
	if st.TokenExpires != nil {
		tok = "expires " + fmtOptTime(st.TokenExpires)
		if !st.TokenValid {
			tok += " (renewed before next call)"
		}
	}
	line("Token", tok)
	line("Enrolled in console", fmt.Sprint(st.Enrolled))
	printEnrollment(line, st)
	line("Sharing", fmt.Sprintf("%v (options: %s)", st.Sharing, strings.Join(st.ConsoleOptions, ",")))
	line("Last pull", fmt.Sprintf("%s (+%d/-%d)", fmtOptTime(st.LastPull), st.LastPullNew, st.LastPullDeleted))
	for _, b := range st.Blocklists {
		line("  blocklist "+b.Name, fmt.Sprintf("%d decisions, last modified %s", b.Count, b.LastPull))
	}
	line("Last push", fmt.Sprintf("%s (%d signals, cursor alert %d)", fmtOptTime(st.LastPush), st.SignalsPushed, st.PushCursor))
	if st.Active {
		line("Last metrics", fmtOptTime(st.LastMetrics))
	}
	line("Decisions from CAPI", fmt.Sprintf("community %d, lists %d", st.Decisions["CAPI"], st.Decisions["lists"]))
	if st.ErrorCount > 0 {
		line("Errors", fmt.Sprintf("%d (streak %d), last at %s: %s", st.ErrorCount, st.FailureStreak, fmtOptTime(st.LastErrorAt), st.LastError))
	}
	line("PAPI", st.PAPI)
}
