package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/lapi/profiles"
	"github.com/spf13/cobra"
)

// profilesCmd: `halapi profiles apply|show`, through the local node's admin
// socket (an apply on a follower is forwarded to the leader).
func profilesCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "profiles", Short: "Cluster-wide profiles and notification configs"}
	o.bind(c)
	var notifDir string
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Replicate a profiles.yaml (and its .local overlay) and, with --notification-dir, the notification configs to every node",
		Long: "Replicate a profiles.yaml (and its .local overlay) and, with --notification-dir, the notification configs (*.yaml) to every node.\n" +
			"The set replaces the previous one as a whole and wins over each node's --profiles file; every node evaluates it from the moment it applies it.",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			// parsed here for a message naming the file; the node parses again
			data, _, err := profiles.ReadFiles(args[0])
			if err != nil {
				return err
			}
			req := lapi.ProfilesApplyRequest{YAML: data, SetBy: whoAmI()}
			if notifDir != "" {
				if req.Notifications, err = lapi.ReadNotificationsDir(notifDir); err != nil {
					return err
				}
			}
			var v lapi.ProfilesView
			if err := o.call("PUT", "/profiles", nil, req, &v); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(v)
			}
			n := 0
			if v.Replicated != nil {
				n = len(v.Replicated.Files)
			}
			fmt.Printf("Profiles applied cluster-wide: %d profiles (%s), %d notification configs, hash %s\n",
				len(v.InUse.Profiles), strings.Join(v.InUse.Profiles, ", "), n, v.InUse.Hash)
			return nil
		},
	}
	apply.Flags().StringVar(&notifDir, "notification-dir", "", "directory of notification plugin configs (*.yaml) to replicate with the profiles")
	var content bool
	show := &cobra.Command{
		Use: "show", Short: "Show the replicated profiles and what this node evaluates", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var v lapi.ProfilesView
			if err := o.call("GET", "/profiles", nil, nil, &v); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(v)
			}
			printProfilesView(v, content)
			return nil
		},
	}
	show.Flags().BoolVar(&content, "content", false, "print the profiles YAML and the notification configs")
	c.AddCommand(apply, show)
	return c
}

func printProfilesView(v lapi.ProfilesView, content bool) {
	u := v.InUse
	fmt.Printf("in use on this node: %s profiles, hash %s: %s\n", u.Source, u.Hash, strings.Join(u.Profiles, ", "))
	if u.LocalDiffers {
		fmt.Printf("WARNING: this node's --profiles file or --notification-dir (hash %s) differs from the replicated set and is ignored\n", u.LocalHash)
	}
	if u.Error != "" {
		fmt.Println("WARNING: the replicated profiles do not load on this node:", u.Error)
	}
	r := v.Replicated
	if r == nil {
		fmt.Println("replicated: none (every node uses its own --profiles file or the default; `halapi profiles apply FILE` makes one set cluster-wide)")
		return
	}
	fmt.Printf("replicated: hash %s, set by %s at %s (raft index %d), %d bytes, notification configs: %s\n",
		r.Hash, orDash(r.SetBy), time.Unix(0, r.SetAt).Local().Format(time.RFC3339), r.Index, len(r.YAML), orDash(strings.Join(r.Files, ", ")))
	if !content {
		return
	}
	fmt.Printf("\n--- profiles.yaml\n%s", r.YAML)
	if len(r.YAML) > 0 && r.YAML[len(r.YAML)-1] != '\n' {
		fmt.Println()
	}
	names := make([]string, 0, len(r.Notifications))
	for k := range r.Notifications {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Printf("\n--- notifications/%s\n%s", k, r.Notifications[k])
		if b := r.Notifications[k]; len(b) > 0 && b[len(b)-1] != '\n' {
			fmt.Println()
		}
	}
}

// whoAmI names the operator and host for `profiles show`.
func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	s := name + "@" + host
	if len(s) > 255 {
		s = s[:255]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// reloadProfilesOnHUP re-reads the node's --profiles file and
// --notification-dir on SIGHUP until ctx ends; a bad file is logged and
// changes nothing.
func reloadProfilesOnHUP(ctx context.Context, srv *lapi.Server, path, dir string, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := srv.ReloadLocalProfiles(path, dir); err != nil {
					logger.Error("SIGHUP: profiles not reloaded, the previous ones stay in use", "err", err)
				}
			}
		}
	}()
}

// profilesInfo reports the profiles in use for cluster status.
func profilesInfo(srv *lapi.Server) func() cluster.ProfilesInfo {
	return func() cluster.ProfilesInfo {
		a := srv.Profiles()
		return cluster.ProfilesInfo{Hash: a.Hash, Source: a.Source, LocalDiffers: a.LocalDiffers, Error: a.Error}
	}
}

// memberProfiles is the PROFILES column of cluster status: source and the
// start of the hash, "MISMATCH" when the member disagrees with the leader.
func memberProfiles(p *cluster.ProfilesInfo) string {
	if p == nil {
		return "-"
	}
	h := p.Hash
	if len(h) > 12 {
		h = h[:12]
	}
	s := p.Source + " " + h
	if p.Mismatch {
		s += " MISMATCH"
	}
	return s
}
