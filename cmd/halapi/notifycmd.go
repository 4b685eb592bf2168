package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/notify"
)

type notifyFlags struct {
	notificationDir, pluginDir, pluginUser, pluginGroup string
}

func bindNotifyFlags(fl *pflag.FlagSet, f *notifyFlags) {
	fl.StringVar(&f.notificationDir, "notification-dir", "", "directory of notification plugin configs (*.yaml), as CrowdSec's config_paths.notification_dir")
	fl.StringVar(&f.pluginDir, "plugin-dir", "", "directory of the notification plugin binaries (notification-<type>), as CrowdSec's config_paths.plugin_dir")
	fl.StringVar(&f.pluginUser, "plugin-user", "", "run the notification plugins as this user (needs root; with --plugin-group), as CrowdSec's plugin_config.user")
	fl.StringVar(&f.pluginGroup, "plugin-group", "", "run the notification plugins with this group (with --plugin-user), as CrowdSec's plugin_config.group")
}

// usedConfigs keeps the configs of the plugin types the profiles use (the
// reference starts only those plugins and configures every config of
// their types).
func usedConfigs(all []*notify.Config, names []string) []*notify.Config {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	typs := map[string]bool{}
	for _, c := range all {
		if want[c.Name] {
			typs[c.Type] = true
		}
	}
	var out []*notify.Config
	for _, c := range all {
		if typs[c.Type] {
			out = append(out, c)
		}
	}
	return out
}

// prepareNotify checks the notification setup as the reference does at
// start (a profile naming a notification without config, or a plugin
// without a valid binary, refuses the start). It returns the admin service
// and the configs the dispatcher runs (none when no profile lists a
// notification).
//
// files gives the notification config files in force (nil: read
// --notification-dir); a node serving reads them from the profiles set it
// evaluates, which is the replicated one once `halapi profiles apply` ran.
func prepareNotify(f notifyFlags, names []string, files func() (map[string][]byte, error), logger *slog.Logger) (*notify.Service, []*notify.Config, error) {
	popts := notify.PluginOptions{Dir: f.pluginDir, User: f.pluginUser, Group: f.pluginGroup, Logger: logger.With("part", "notify")}
	if files == nil {
		files = func() (map[string][]byte, error) {
			l, err := lapi.LoadLocalProfiles("", f.notificationDir)
			if err != nil {
				return nil, err
			}
			return l.Notifications, nil
		}
	}
	all := func() ([]*notify.Config, []string, error) {
		fs, err := files()
		if err != nil {
			return nil, nil, fmt.Errorf("--notification-dir: %w", err)
		}
		return notify.ParseConfigs(fs)
	}
	svc := &notify.Service{Configs: all, ProfileNames: func() []string { return names }, Plugins: popts, Metrics: notify.NewMetrics()}
	cfgs, warnings, err := all()
	if err != nil && len(names) == 0 {
		// as the reference: without a profile listing a notification,
		// the configs are not needed (`notifications list` shows the error)
		logger.Debug("notification configs not read: no profile lists a notification", "err", err)
		return svc, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("notifications: %w", err)
	}
	for _, w := range warnings {
		logger.Warn(w)
	}
	if len(names) == 0 {
		if len(cfgs) > 0 {
			logger.Info("notification configs found but no profile lists a notification: no plugin runs")
		}
		return svc, nil, nil
	}
	if err := notify.CheckProfiles(cfgs, names); err != nil {
		return nil, nil, fmt.Errorf("notifications: %w (--notification-dir %q)", err, f.notificationDir)
	}
	if f.pluginDir == "" {
		return nil, nil, fmt.Errorf("notifications: profiles list notifications (%s) but --plugin-dir is not set", strings.Join(names, ", "))
	}
	used := usedConfigs(cfgs, names)
	if err := notify.CheckPlugins(popts, used); err != nil {
		return nil, nil, fmt.Errorf("notifications: %w", err)
	}
	return svc, used, nil
}

// startNotify prepares the notifications and registers the leader job that
// runs the plugins.
func startNotify(f notifyFlags, machine *fsm.FSM, node *cluster.Node, srv *lapi.Server, logger *slog.Logger) (*notify.Service, error) {
	names := srv.ProfileNotifications()
	files := func() (map[string][]byte, error) { return srv.Profiles().Notifications, nil }
	svc, used, err := prepareNotify(f, names, files, logger)
	if err != nil {
		return nil, err
	}
	svc.Store = machine
	svc.ProfileNames = srv.ProfileNotifications
	// Without a plugin dir no plugin can run; with one, the dispatcher
	// follows the profiles in force (a `profiles apply` that adds a
	// notification starts its plugin on the leader without a restart).
	if len(used) == 0 && f.pluginDir == "" {
		return svc, nil
	}
	src := func() ([]*notify.Config, error) {
		c, _, err := svc.Configs()
		return usedConfigs(c, srv.ProfileNotifications()), err
	}
	svc.Dispatcher = notify.NewDispatcher(notify.Options{Plugins: svc.Plugins, Logger: logger.With("part", "notify")}, machine, node, src, svc.Metrics)
	node.AddLeaderJob(cluster.LeaderJob{Name: "notify", Run: svc.Dispatcher.RunLeader, MinBackoff: time.Second, MaxBackoff: 30 * time.Second})
	logger.Info("notifications enabled", "notifications", strings.Join(names, ", "), "plugin_dir", f.pluginDir)
	return svc, nil
}

func notificationsCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "notifications", Aliases: []string{"notification"},
		Short: "Notification plugins: list, inspect, test (what cscli notifications does)"}
	o.bind(c)
	list := &cobra.Command{
		Use: "list", Aliases: []string{"status"}, Short: "List the notification configs, their plugins and delivery counts", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var lv notify.ListView
			if err := o.call("GET", "/notifications", nil, nil, &lv); err != nil {
				return err
			}
			if o.output != "human" {
				return printJSON(lv)
			}
			for _, w := range lv.Warnings {
				fmt.Println("warning:", w)
			}
			for _, m := range lv.Missing {
				fmt.Printf("warning: profiles list '%s' but no config defines it\n", m)
			}
			rows := [][]string{}
			for _, v := range lv.Notifications {
				bin := "ok"
				if !v.BinaryOK {
					bin = "invalid"
				}
				pending := "-"
				if v.Live != nil {
					pending = fmt.Sprint(v.Live.Pending)
				}
				rows = append(rows, []string{v.Name, v.Type, v.File, fmt.Sprint(v.Active), bin, fmt.Sprint(v.Sent), fmt.Sprint(v.Lost), pending})
			}
			table("NAME\tTYPE\tFILE\tACTIVE\tPLUGIN\tSENT\tLOST\tPENDING", rows)
			if lv.Running {
				fmt.Printf("plugins run on this node (the leader) since %s\n", lv.RunningSince.Local().Format(time.RFC3339))
			} else {
				fmt.Println("plugins run on the leader; PENDING is known there")
			}
			return nil
		},
	}
	inspect := &cobra.Command{
		Use: "inspect NAME", Short: "Show one notification config and its delivery state", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var v notify.View
			if err := o.call("GET", "/notifications/"+url.PathEscape(args[0]), nil, nil, &v); err != nil {
				return err
			}
			if o.output != "human" {
				return printJSON(v)
			}
			line := func(k, val string) { fmt.Printf("%-18s %s\n", k+":", val) }
			line("Name", v.Name)
			line("Type", v.Type)
			line("File", v.File)
			line("Active", fmt.Sprint(v.Active))
			bin := v.Binary + " (ok)"
			if !v.BinaryOK {
				bin = v.Binary + " (" + v.BinError + ")"
			}
			line("Plugin", bin)
			line("Group wait", orDash(v.Wait))
			line("Group threshold", fmt.Sprint(v.Thresh))
			line("Max retry", fmt.Sprint(v.MaxRetry))
			line("Timeout", v.Timeout)
			line("Cursor (alert)", fmt.Sprint(v.Cursor))
			line("Sent / lost", fmt.Sprintf("%d / %d (%d batches)", v.Sent, v.Lost, v.Batches))
			if v.LastSent != nil {
				line("Last sent", v.LastSent.Local().Format(time.RFC3339))
			}
			if v.LastError != "" {
				line("Last loss", v.LastError)
			}
			if v.Live != nil {
				line("Pending", fmt.Sprint(v.Live.Pending))
				line("Failed attempts", fmt.Sprint(v.Live.FailedAttempts))
			}
			fmt.Println("Format:")
			fmt.Println(v.Format)
			if len(v.Plugin) > 0 {
				fmt.Println("Plugin config:")
				return printJSON(v.Plugin)
			}
			return nil
		},
	}
	test := &cobra.Command{
		Use: "test NAME", Short: "Send a test alert through a notification (on this node)", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var res notify.TestResult
			if err := o.call("POST", "/notifications/"+url.PathEscape(args[0])+"/test", nil, notify.TestRequest{}, &res); err != nil {
				return err
			}
			if o.output != "human" {
				return printJSON(res)
			}
			fmt.Println(res.Message)
			return nil
		},
	}
	c.AddCommand(list, inspect, test)
	return c
}

func notifyMetrics(s *notify.Service) []prometheus.Collector { return s.Metrics.Collectors() }
