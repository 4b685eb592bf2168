package main

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/spf13/cobra"
)

// auditCmd is `halapi audit`: the replicated audit trail (who changed
// what, from the console or this CLI), as the local node holds it.
func auditCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "audit", Short: "The replicated audit trail (who changed what)"}
	o.bind(c)
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List the newest audit records (every node holds the same trail)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			if limit < 1 || limit > fsm.AuditCap {
				return fmt.Errorf("--limit must be between 1 and %d", fsm.AuditCap)
			}
			var recs []fsm.AuditRecord
			if err := o.call("GET", "/audit", url.Values{"limit": {strconv.Itoa(limit)}}, nil, &recs); err != nil {
				return err
			}
			if o.output != "human" {
				return printJSON(recs)
			}
			rows := make([][]string, 0, len(recs))
			for _, r := range recs {
				rows = append(rows, []string{r.Time.Local().Format(time.RFC3339), r.Node, r.Who, r.Action, orDash(r.Target), orDash(r.Detail)})
			}
			table("TIME\tNODE\tWHO\tACTION\tTARGET\tDETAIL", rows)
			return nil
		},
	}
	list.Flags().IntVar(&limit, "limit", 100, "how many records, newest first")
	c.AddCommand(list)
	return c
}
