package main

import (
	"fmt"
	"net/url"
	"time"

	"github.com/halapi/halapi/ui"
	"github.com/spf13/cobra"
)

// uiCmd is `halapi ui`: the web console's sign-in link.
func uiCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "ui", Short: "Web console of a node (sign-in link)"}
	c.PersistentFlags().StringVar(&o.dataDir, "data-dir", "halapi-data", "data dir of the local node")
	var name string
	var ttl time.Duration
	login := &cobra.Command{
		Use:   "login",
		Short: "Print a one-time link that signs a browser in to this node's web console",
		Long: "Print a one-time link that signs a browser in to this node's web console.\n\n" +
			"The link works once and expires (--ttl); the session it opens lasts 8 hours on this node.\n" +
			"Who can run this command is root on the node (it talks to the admin socket).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ui.ValidName(name); err != nil {
				return fmt.Errorf("--name: %w", err)
			}
			if ttl <= 0 || ttl > ui.MaxLoginTTL {
				return fmt.Errorf("--ttl must be between 1s and %s", ui.MaxLoginTTL)
			}
			var out ui.LoginLink
			q := url.Values{"name": {name}, "ttl": {ttl.String()}}
			if err := o.call("POST", ui.LoginRoute, q, nil, &out); err != nil {
				if err.Error() == "unknown admin route" {
					return fmt.Errorf("the web console is off on this node (serve --ui=false)")
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out.URL)
			return nil
		},
	}
	login.Flags().StringVar(&name, "name", "admin", "operator name the session is attributed to (audit trail: link:NAME)")
	login.Flags().DurationVar(&ttl, "ttl", ui.DefaultLoginTTL, "how long the link stays valid")
	c.AddCommand(login)
	return c
}
