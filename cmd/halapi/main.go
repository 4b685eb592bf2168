// Command halapi runs and administers a halapi node.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "halapi",
		Short:         "A highly available, Raft-replicated CrowdSec Local API",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       currentBuild().short(),
	}
	root.SetVersionTemplate(currentBuild().String())
	root.AddCommand(serveCmd(), machinesCmd(), bouncersCmd(), decisionsCmd(), alertsCmd(), allowlistsCmd(), clusterCmd(), capiCmd(), certCmd(), agentCmd())
	root.AddCommand(versionCmd())
	root.AddCommand(importCmd())
	root.AddCommand(profilesCmd())
	root.AddCommand(notificationsCmd())
	root.AddCommand(auditCmd())
	root.AddCommand(uiCmd())
	root.AddCommand(debugCmd())
	polishHelp(root)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
}
