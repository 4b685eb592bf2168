package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/halapi/halapi/lapi"
	"github.com/spf13/cobra"
)

// machinesInspectCmd is `machines inspect NAME`: cscli's rows, then the
// usage metrics the agent sent.
func machinesInspectCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use: "inspect NAME", Short: "Show a machine, its hub items, datasources and usage metrics", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var m lapi.MachineInspect
			if err := o.call("GET", "/machines/"+url.PathEscape(args[0]), nil, nil, &m); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(m)
			}
			printMachineInspect(os.Stdout, &m)
			return nil
		},
	}
}

// bouncersInspectCmd is `bouncers inspect NAME`.
func bouncersInspectCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use: "inspect NAME", Short: "Show a bouncer and its usage metrics", Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var b lapi.BouncerInspect
			if err := o.call("GET", "/bouncers/"+url.PathEscape(args[0]), nil, nil, &b); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(b)
			}
			printBouncerInspect(os.Stdout, &b)
			return nil
		},
	}
}

type kvRows struct{ rows [][2]string }

func (k *kvRows) add(key string, v any) {
	s := fmt.Sprint(v)
	switch t := v.(type) {
	case time.Time:
		s = t.Local().Format(time.RFC3339)
	case *time.Time:
		s = fmtTime(t)
	}
	k.rows = append(k.rows, [2]string{key, s})
}

func (k *kvRows) print(w io.Writer, title string) {
	fmt.Fprintln(w, title)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	for _, r := range k.rows {
		fmt.Fprintf(tw, "  %s\t%s\n", r[0], r[1])
	}
	_ = tw.Flush()
}

func featureFlags(k *kvRows, ff string) {
	for _, f := range strings.Split(ff, ",") {
		if f = strings.TrimSpace(f); f != "" {
			k.add("Feature Flags", f)
		}
	}
}

func printMachineInspect(w io.Writer, m *lapi.MachineInspect) {
	var k kvRows
	k.add("IP Address", m.IP)
	k.add("Created At", m.CreatedAt)
	k.add("Last Update", m.UpdatedAt)
	k.add("Last Heartbeat", m.LastHeartbeat)
	k.add("Validated?", m.Validated)
	k.add("CrowdSec version", m.Version)
	k.add("OS", orDash(m.OS))
	k.add("Auth type", m.AuthType)
	var ds map[string]int64
	if json.Unmarshal(m.Datasources, &ds) == nil {
		names := make([]string, 0, len(ds))
		for n := range ds {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			k.add("Datasources", fmt.Sprintf("%s: %d", n, ds[n]))
		}
	}
	featureFlags(&k, m.FeatureFlags)
	var hub map[string][]struct {
		Name    string `json:"name"`
		Status  string `json:"status"`
		Version string `json:"version"`
	}
	if json.Unmarshal(m.HubItems, &hub) == nil {
		for _, c := range hub["collections"] {
			k.add("Collections", c.Name)
		}
	}
	k.print(w, "Machine: "+m.ID)
	printUsage(w, m.Usage)
}

func printBouncerInspect(w io.Writer, b *lapi.BouncerInspect) {
	var k kvRows
	k.add("Created At", b.CreatedAt)
	k.add("Last Update", b.UpdatedAt)
	k.add("Revoked?", b.Revoked)
	k.add("IP Address", b.IP)
	k.add("Type", b.Type)
	k.add("Version", b.Version)
	k.add("Last Pull", b.LastPull)
	k.add("Auth type", b.AuthType)
	k.add("OS", orDash(b.OS))
	k.add("Auto Created", b.AutoCreated)
	featureFlags(&k, b.FeatureFlags)
	k.print(w, "Bouncer: "+b.Name)
	printUsage(w, b.Usage)
}

type usageDetail struct {
	Meta struct {
		UtcNow int64 `json:"utc_now_timestamp"`
		Window int64 `json:"window_size_seconds"`
	} `json:"meta"`
	Items []struct {
		Name   string            `json:"name"`
		Value  float64           `json:"value"`
		Unit   string            `json:"unit"`
		Labels map[string]string `json:"labels"`
	} `json:"items"`
}

// printUsage prints each kept usage-metrics payload, newest first: one
// table of its items (name, value, unit, labels).
func printUsage(w io.Writer, us []lapi.UsageView) {
	fmt.Fprintln(w)
	if len(us) == 0 {
		fmt.Fprintln(w, "No usage metrics received")
		return
	}
	for i := len(us) - 1; i >= 0; i-- {
		u := us[i]
		sent := "not yet"
		if u.Sent {
			sent = "yes"
		}
		var ds []usageDetail
		_ = json.Unmarshal(u.Metrics, &ds)
		fmt.Fprintf(w, "Usage metrics received %s (forwarded to CAPI: %s)\n", u.ReceivedAt.Local().Format(time.RFC3339), sent)
		tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "  WINDOW\tNAME\tVALUE\tUNIT\tLABELS")
		n := 0
		for _, d := range ds {
			win := "-"
			if d.Meta.Window > 0 {
				win = (time.Duration(d.Meta.Window) * time.Second).String()
			}
			for _, it := range d.Items {
				keys := make([]string, 0, len(it.Labels))
				for k := range it.Labels {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				var ls []string
				for _, k := range keys {
					ls = append(ls, k+"="+it.Labels[k])
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", win, it.Name, strconv.FormatFloat(it.Value, 'f', -1, 64), it.Unit,
					orDash(strings.Join(ls, " ")))
				n++
			}
		}
		if n == 0 {
			fmt.Fprintln(tw, "  -\t(no items)\t\t\t")
		}
		_ = tw.Flush()
	}
}
