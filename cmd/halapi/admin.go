package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/lapi"
	"github.com/spf13/cobra"
)

type adminOpts struct {
	dataDir string
	output  string
}

func (o *adminOpts) bind(c *cobra.Command) {
	c.PersistentFlags().StringVar(&o.dataDir, "data-dir", "halapi-data", "data dir of the local node")
	c.PersistentFlags().StringVarP(&o.output, "output", "o", "human", "output format: human or json")
}

func (o *adminOpts) client() (*admin.Client, error) { return admin.NewClient(o.dataDir) }

// call sends one admin request to the local node.
func (o *adminOpts) call(method, path string, query url.Values, body, out any) error {
	a, err := o.client()
	if err != nil {
		return err
	}
	return a.Do(method, path, query, body, out)
}

func (o *adminOpts) checkOutput() error {
	if o.output != "human" && o.output != "json" && o.output != "raw" {
		return fmt.Errorf("unknown output format %q (human, json or raw)", o.output)
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func table(header string, rows [][]string) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	_ = tw.Flush()
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func machinesCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "machines", Short: "Manage machines (agents)"}
	o.bind(c)

	var password, file, apiURL string
	var auto, force bool
	add := &cobra.Command{
		Use:   "add [NAME]",
		Short: "Add a validated machine (prints or writes its credentials)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			if len(args) == 0 && !auto {
				return fmt.Errorf("give a machine name or --auto")
			}
			var target *credsTarget
			if file != "" {
				t, err := resolveCredsTarget(o, file, apiURL, cmd.Flags().Changed("url"))
				if err != nil {
					return err
				}
				for _, w := range t.warn {
					fmt.Fprintln(os.Stderr, "warning: "+w)
				}
				target = t
			}
			req := lapi.AddMachineRequest{Password: password, Force: force}
			if len(args) == 1 {
				req.ID = args[0]
			}
			var out lapi.AddMachineRequest
			if err := o.call("POST", "/machines", nil, req, &out); err != nil {
				if !force && strings.Contains(err.Error(), "already exist") {
					return fmt.Errorf("%w (use --force to overwrite its password)", err)
				}
				return err
			}
			if file != "" {
				b, err := target.file(out.ID, out.Password)
				if err != nil {
					return err
				}
				apiURL = target.url
				if file == "-" {
					fmt.Print(string(b))
					return nil
				}
				if err := writeSecretFile(file, b); err != nil {
					return err
				}
			}
			if o.output == "json" {
				return printJSON(map[string]string{"machine_id": out.ID, "url": apiURL, "file": file})
			}
			if file != "" && file != "-" {
				fmt.Printf("Machine '%s' added; credentials written to %s\n", out.ID, file)
			} else {
				fmt.Printf("Machine '%s' added\n", out.ID)
			}
			return nil
		},
	}
	add.Flags().StringVar(&password, "password", "", "machine password (generated if empty)")
	add.Flags().BoolVar(&auto, "auto", false, "generate the machine name")
	add.Flags().BoolVar(&force, "force", false, "overwrite the password of an existing machine")
	add.Flags().StringVarP(&file, "file", "f", "", "write a local_api_credentials.yaml here (- for stdout)")
	add.Flags().StringVarP(&apiURL, "url", "u", "https://127.0.0.1:8080/", "LAPI URL written in the credentials file (default: the node's own API URL)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List machines",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var ms []lapi.MachineView
			if err := o.call("GET", "/machines", nil, nil, &ms); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(ms)
			}
			var rows [][]string
			for _, m := range ms {
				st := "pending"
				if m.Validated {
					st = "validated"
				}
				rows = append(rows, []string{m.ID, m.IP, st, m.Version, m.AuthType, fmtTime(m.LastHeartbeat)})
			}
			table("NAME\tIP ADDRESS\tSTATUS\tVERSION\tAUTH\tLAST HEARTBEAT", rows)
			return nil
		},
	}
	validate := &cobra.Command{
		Use: "validate NAME", Short: "Validate a pending machine", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.call("POST", "/machines/"+url.PathEscape(args[0])+"/validate", nil, nil, nil); err != nil {
				return err
			}
			fmt.Printf("Machine '%s' validated\n", args[0])
			return nil
		},
	}
	del := &cobra.Command{
		Use: "delete NAME...", Short: "Delete machines", Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			for _, n := range args {
				if err := o.call("DELETE", "/machines/"+url.PathEscape(n), nil, nil, nil); err != nil {
					return err
				}
				fmt.Printf("Machine '%s' deleted\n", n)
			}
			return nil
		},
	}
	c.AddCommand(add, list, validate, del, machinesInspectCmd(o))
	return c
}

func bouncersCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "bouncers", Short: "Manage bouncers"}
	o.bind(c)
	var key string
	add := &cobra.Command{
		Use: "add NAME", Short: "Add a bouncer and print its API key once", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var out lapi.AddBouncerRequest
			if err := o.call("POST", "/bouncers", nil, lapi.AddBouncerRequest{Name: args[0], Key: key}, &out); err != nil {
				return err
			}
			switch o.output {
			case "json":
				return printJSON(out)
			case "raw":
				fmt.Println(out.Key)
			default:
				fmt.Printf("API key for '%s':\n\n   %s\n\nPlease keep it safe, you won't be able to retrieve it!\n", out.Name, out.Key)
			}
			return nil
		},
	}
	add.Flags().StringVarP(&key, "key", "k", "", "API key to use (generated if empty)")
	list := &cobra.Command{
		Use: "list", Short: "List bouncers", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var bs []lapi.BouncerView
			if err := o.call("GET", "/bouncers", nil, nil, &bs); err != nil {
				return err
			}
			revoked := o.revokedCertBouncers(bs)
			if o.output == "json" {
				return printJSON(withCertRevoked(bs, revoked))
			}
			var rows [][]string
			for _, b := range bs {
				valid := "✔️"
				if b.Revoked {
					valid = "🚫"
				}
				if revoked[b.Name] {
					valid = "🚫 certificate revoked"
				}
				rows = append(rows, []string{b.Name, b.IP, valid, fmtTime(b.LastPull), b.Type, b.Version, b.AuthType})
			}
			table("NAME\tIP ADDRESS\tVALID\tLAST API PULL\tTYPE\tVERSION\tAUTH TYPE", rows)
			return nil
		},
	}
	del := &cobra.Command{
		Use: "delete NAME...", Short: "Delete bouncers (and the rows auto-created for their key)", Args: cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			for _, n := range args {
				if err := o.call("DELETE", "/bouncers/"+url.PathEscape(n), nil, nil, nil); err != nil {
					return err
				}
				fmt.Printf("Bouncer '%s' deleted\n", n)
			}
			return nil
		},
	}
	c.AddCommand(add, list, del, bouncersInspectCmd(o))
	return c
}

func decisionsCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "decisions", Short: "Manage decisions"}
	o.bind(c)
	var ip, rng, scope, value, typ, origin, duration, reason string
	var all bool
	list := &cobra.Command{
		Use: "list", Short: "List active decisions", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			q := url.Values{}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("ip", ip)
			set("range", rng)
			set("scopes", scope)
			set("value", value)
			set("type", typ)
			set("origins", origin)
			var ds []lapi.DecisionView
			if err := o.call("GET", "/decisions", q, nil, &ds); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(ds)
			}
			var rows [][]string
			for _, d := range ds {
				rows = append(rows, []string{fmt.Sprint(d.ID), d.Origin, d.Scope + ":" + d.Value, d.Scenario, d.Type, d.Duration, fmt.Sprint(d.AlertID)})
			}
			table("ID\tSOURCE\tSCOPE:VALUE\tREASON\tACTION\tEXPIRATION\tALERT ID", rows)
			return nil
		},
	}
	for _, cmd := range []*cobra.Command{list} {
		cmd.Flags().StringVarP(&ip, "ip", "i", "", "IP covered by the decision")
		cmd.Flags().StringVarP(&rng, "range", "r", "", "range covered by the decision")
		cmd.Flags().StringVar(&scope, "scope", "", "decision scope")
		cmd.Flags().StringVar(&value, "value", "", "decision value")
		cmd.Flags().StringVarP(&typ, "type", "t", "", "decision type")
		cmd.Flags().StringVar(&origin, "origin", "", "decision origin")
	}
	add := &cobra.Command{
		Use: "add", Short: "Add a manual decision", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v := value
			if ip != "" {
				v = ip
			}
			if rng != "" {
				v, scope = rng, "Range"
			}
			req := lapi.AddDecisionRequest{Value: v, Scope: scope, Type: typ, Duration: duration, Reason: reason}
			if err := o.call("POST", "/decisions", nil, req, nil); err != nil {
				return err
			}
			fmt.Println("Decision successfully added")
			return nil
		},
	}
	add.Flags().StringVarP(&ip, "ip", "i", "", "IP to ban")
	add.Flags().StringVarP(&rng, "range", "r", "", "range to ban")
	add.Flags().StringVar(&scope, "scope", "", "decision scope (default Ip)")
	add.Flags().StringVar(&value, "value", "", "decision value (custom scopes)")
	add.Flags().StringVarP(&typ, "type", "t", "ban", "decision type")
	add.Flags().StringVarP(&duration, "duration", "d", "4h", "decision duration")
	add.Flags().StringVarP(&reason, "reason", "R", "", "reason (scenario) of the decision")
	var id string
	del := &cobra.Command{
		Use: "delete", Short: "Expire decisions", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			q := url.Values{}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			set("ip", ip)
			set("range", rng)
			set("scope", scope)
			set("value", value)
			set("type", typ)
			set("origin", origin)
			if id != "" {
				return fmt.Errorf("--id: use the LAPI (cscli decisions delete --id) or filters here")
			}
			if len(q) == 0 && !all {
				return fmt.Errorf("give a filter (--ip, --range, --scope, --value, --type, --origin) or --all")
			}
			var out map[string]string
			if err := o.call("DELETE", "/decisions", q, nil, &out); err != nil {
				return err
			}
			fmt.Printf("%s decision(s) deleted\n", out["nbDeleted"])
			return nil
		},
	}
	del.Flags().StringVarP(&ip, "ip", "i", "", "IP")
	del.Flags().StringVarP(&rng, "range", "r", "", "range")
	del.Flags().StringVar(&scope, "scope", "", "scope")
	del.Flags().StringVar(&value, "value", "", "value")
	del.Flags().StringVarP(&typ, "type", "t", "", "type")
	del.Flags().StringVar(&origin, "origin", "", "origin")
	del.Flags().BoolVar(&all, "all", false, "expire every active decision")
	del.Flags().StringVar(&id, "id", "", "unsupported here")
	_ = del.Flags().MarkHidden("id")
	c.AddCommand(list, add, del)
	return c
}

func alertsCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "alerts", Short: "Inspect alerts"}
	o.bind(c)
	var limit string
	list := &cobra.Command{
		Use: "list", Short: "List alerts (newest first)", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var alerts []map[string]any
			if err := o.call("GET", "/alerts", url.Values{"limit": {limit}}, nil, &alerts); err != nil {
				return err
			}
			if o.output == "json" {
				if alerts == nil {
					alerts = []map[string]any{}
				}
				return printJSON(alerts)
			}
			var rows [][]string
			for _, al := range alerts {
				src, _ := al["source"].(map[string]any)
				ds, _ := al["decisions"].([]any)
				rows = append(rows, []string{fmt.Sprint(al["id"]), fmt.Sprintf("%v:%v", src["scope"], src["value"]),
					fmt.Sprint(al["scenario"]), fmt.Sprint(len(ds)), fmt.Sprint(al["machine_id"]), fmt.Sprint(al["created_at"])})
			}
			table("ID\tSCOPE:VALUE\tREASON\tDECISIONS\tMACHINE\tCREATED AT", rows)
			return nil
		},
	}
	list.Flags().StringVarP(&limit, "limit", "l", "50", "maximum number of alerts (0 = all)")
	inspect := &cobra.Command{
		Use: "inspect ID", Short: "Show one alert", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			var al map[string]any
			if err := o.call("GET", "/alerts/"+url.PathEscape(args[0]), nil, nil, &al); err != nil {
				return err
			}
			return printJSON(al)
		},
	}
	var maxItems, maxAge string
	flush := &cobra.Command{
		Use: "flush", Short: "Run the retention job once", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			q := url.Values{}
			if maxItems != "" {
				q.Set("max_items", maxItems)
			}
			if maxAge != "" {
				q.Set("max_age", maxAge)
			}
			var out map[string]int
			if err := o.call("POST", "/flush", q, nil, &out); err != nil {
				return err
			}
			fmt.Printf("%d alert(s) flushed\n", out["deleted_alerts"])
			return nil
		},
	}
	flush.Flags().StringVar(&maxItems, "max-items", "", "keep at most this many alerts")
	flush.Flags().StringVar(&maxAge, "max-age", "", "delete alerts older than this")
	c.AddCommand(list, inspect, flush)
	return c
}

func allowlistsCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "allowlists", Short: "Manage allowlists"}
	o.bind(c)
	var desc, comment, expiration string
	create := &cobra.Command{
		Use: "create NAME", Short: "Create an allowlist", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.call("POST", "/allowlists", nil, map[string]string{"name": args[0], "description": desc}, nil); err != nil {
				return err
			}
			fmt.Printf("Allowlist '%s' created\n", args[0])
			return nil
		},
	}
	create.Flags().StringVarP(&desc, "description", "d", "", "description")
	addItems := &cobra.Command{
		Use: "add NAME VALUE...", Short: "Add IPs or ranges (expires matching active decisions)", Args: cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			var out map[string]int
			req := lapi.AllowlistItemsRequest{Values: args[1:], Comment: comment, Expiration: expiration}
			if err := o.call("POST", "/allowlists/"+url.PathEscape(args[0])+"/items", nil, req, &out); err != nil {
				return err
			}
			fmt.Printf("%d value(s) added to '%s'\n", out["added"], args[0])
			return nil
		},
	}
	addItems.Flags().StringVarP(&comment, "comment", "d", "", "comment")
	addItems.Flags().StringVarP(&expiration, "expiration", "e", "", "expire the values after this duration")
	remove := &cobra.Command{
		Use: "remove NAME VALUE...", Short: "Remove values", Args: cobra.MinimumNArgs(2),
		RunE: func(_ *cobra.Command, args []string) error {
			var out map[string]int
			if err := o.call("DELETE", "/allowlists/"+url.PathEscape(args[0])+"/items", nil, lapi.AllowlistItemsRequest{Values: args[1:]}, &out); err != nil {
				return err
			}
			fmt.Printf("%d value(s) removed from '%s'\n", out["removed"], args[0])
			return nil
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete an allowlist", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.call("DELETE", "/allowlists/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Printf("Allowlist '%s' deleted\n", args[0])
			return nil
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List allowlists with their values", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var out []allowlistView
			if err := o.call("GET", "/allowlists", nil, nil, &out); err != nil {
				return err
			}
			if o.output == "json" {
				if out == nil {
					out = []allowlistView{}
				}
				return printJSON(out)
			}
			printAllowlists(out)
			return nil
		},
	}
	c.AddCommand(create, addItems, remove, del, list)
	return c
}

func clusterCmd() *cobra.Command {
	o := &adminOpts{}
	c := &cobra.Command{Use: "cluster", Short: "Cluster membership and health"}
	o.bind(c)
	status := &cobra.Command{
		Use: "status", Short: "Show members, roles, leader and indexes", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var st cluster.Status
			if err := o.call("GET", "/status", nil, nil, &st); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(st)
			}
			leader := st.Leader
			if leader == "" {
				leader = "none (writes are refused)"
			}
			fmt.Printf("node %s (%s), leader: %s, term %d, commit index %d, applied index %d\n\n",
				st.NodeID, st.State, leader, st.Term, st.CommitIndex, st.AppliedIndex)
			var rows [][]string
			for _, m := range st.Members {
				note := m.Error
				rows = append(rows, []string{m.ID, m.Role, m.State, m.APIURL, m.RaftAddr, fmt.Sprint(m.AppliedIndex), memberProfiles(m.Profiles), note})
			}
			table("ID\tROLE\tSTATE\tAPI URL\tCLUSTER ADDR\tAPPLIED\tPROFILES\tERROR", rows)
			for _, w := range st.Warnings {
				fmt.Println("WARNING:", w)
			}
			return nil
		},
	}
	remove := &cobra.Command{
		Use: "remove NODE", Short: "Remove a node from the raft configuration", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.call("DELETE", "/members/"+url.PathEscape(args[0]), nil, nil, nil); err != nil {
				return err
			}
			fmt.Printf("Node '%s' removed from the cluster\n", args[0])
			return nil
		},
	}
	snapshot := &cobra.Command{
		Use: "snapshot", Short: "Take a raft snapshot on this node now (compacts its log); save: a backup", Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if err := o.call("POST", "/snapshot", nil, nil, nil); err != nil {
				return err
			}
			fmt.Println("Snapshot taken")
			return nil
		},
	}
	snapshot.AddCommand(snapshotSaveCmd(o), snapshotInspectCmd(o))
	c.AddCommand(status, remove, snapshot, clusterTokenCmd(o), restoreCmd(o), recoverCmd(o))
	return c
}
