package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/datadir"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/importer"
	"github.com/halapi/halapi/pki"
	"github.com/spf13/cobra"
)

// maxSkipLines bounds the not-carried lines printed per reason (-o json
// lists them all).
const maxSkipLines = 20

func importCmd() *cobra.Command {
	o := &adminOpts{}
	var csConfig, nodeID, clusterListen, clusterAdvertise string
	var dryRun bool
	c := &cobra.Command{
		Use:   "import --crowdsec-config /etc/crowdsec/config.yaml",
		Short: "Import a CrowdSec LAPI's machines, bouncers, decisions, allowlists and CAPI credentials",
		Long: `Read CrowdSec's config.yaml and its database (db_config: sqlite, mysql, postgres/pgx)
and add to halapi what it does not hold yet: machines (with their password hashes and
validation state), bouncers (with their API key hashes), the active decisions with their
alerts, allowlists with their items, the CAPI credentials (online_api_credentials.yaml).
Agents and bouncers keep working with their existing credentials.

Without --node-id the import goes through the running node of --data-dir (any node of
the cluster; written through raft). With --node-id it writes a fresh data dir before the
node's first start (as 'cluster restore' does): start 'halapi serve' on it with the same
--node-id and --cluster-listen/--cluster-advertise.

Importing again adds nothing that is already there; --dry-run prints what would be
added. Records that cannot be carried (expired decisions, unknown auth types, invalid
values) are listed with the reason. profiles.yaml and console.yaml are node settings:
they are checked here and used by 'halapi serve --crowdsec-config'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			if csConfig == "" {
				return errors.New("--crowdsec-config is required (CrowdSec's config.yaml)")
			}
			cfg, err := importer.LoadConfig(csConfig)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			db, dialect, err := importer.Open(ctx, cfg.DB)
			if err != nil {
				return err
			}
			src, err := importer.Read(ctx, db, dialect, time.Now())
			_ = db.Close()
			if err != nil {
				return fmt.Errorf("reading the CrowdSec database: %w", err)
			}
			extra := importer.ReadLocalFiles(cfg, src)

			var rep importer.Report
			switch {
			case nodeID != "":
				rep, err = importFresh(o.dataDir, nodeID, clusterListen, clusterAdvertise, src, dryRun)
			default:
				rep, err = importLive(o, src, dryRun)
			}
			if err != nil {
				return err
			}
			rep.Include(extra)
			if o.output == "json" {
				return printJSON(rep)
			}
			printImportReport(rep, dryRun)
			return nil
		},
	}
	o.bind(c)
	c.Flags().StringVar(&csConfig, "crowdsec-config", "", "CrowdSec's config.yaml (db_config, api.server paths)")
	if fl := c.Flags().Lookup("crowdsec-config"); fl != nil {
		fl.Value = named{fl.Value, "FILE"} // not in placeholderByName: serve's flag of the same name is added elsewhere
	}
	c.Flags().BoolVar(&dryRun, "dry-run", false, "print what would be added, change nothing")
	c.Flags().StringVar(&nodeID, "node-id", "", "import into a fresh --data-dir for a node started later with this serve --node-id")
	c.Flags().StringVar(&clusterListen, "cluster-listen", "", "with --node-id: the node's serve --cluster-listen")
	c.Flags().StringVar(&clusterAdvertise, "cluster-advertise", "", "with --node-id: the node's serve --cluster-advertise, if any")
	return c
}

// maxDecisionsPerRequest bounds one admin request of a live import (each
// answers well within the admin client's 30 s timeout: 100,000 decisions
// take about 4 s on a 3-node loopback cluster).
const maxDecisionsPerRequest = 20000

// importLive sends src to the running node of the data dir in parts.
func importLive(o *adminOpts, src *importer.Source, dryRun bool) (importer.Report, error) {
	q := url.Values{}
	if dryRun {
		q.Set("dry_run", "true")
	}
	var total importer.Report
	for i, part := range src.Parts(maxDecisionsPerRequest) {
		var rep importer.Report
		if err := o.call("POST", importer.Route, q, part, &rep); err != nil {
			if strings.Contains(err.Error(), "no running halapi node") {
				err = fmt.Errorf("%w; to import into a fresh data dir before its first start, give --node-id", err)
			} else if i > 0 {
				err = fmt.Errorf("%w (what was imported before stays; run the import again to add the rest)", err)
			}
			return total, err
		}
		if i == 0 {
			total = rep
		} else {
			total.Merge(rep)
		}
	}
	return total, nil
}

// importFresh writes the imported state into an empty data dir as the
// state of a new one-node cluster (the restore path of a backup).
func importFresh(dir, nodeID, listen, advertise string, src *importer.Source, dryRun bool) (importer.Report, error) {
	if pki.HasIdentity(dir) || cluster.HasState(dir) {
		return importer.Report{}, fmt.Errorf("%s already holds a node: import into it without --node-id while it runs (--node-id is for a fresh data dir)", dir)
	}
	now := time.Now()
	state, index, rep, err := importer.OfflineState(src, now)
	if dryRun || err != nil {
		rep.Applied = false
		return rep, err
	}
	addr := advertise
	if addr == "" {
		addr = listen
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return rep, err
	}
	unlock, err := datadir.Lock(dir)
	if err != nil {
		return rep, err
	}
	defer unlock()
	// checked again under the lock (a node may have started meanwhile)
	if pki.HasIdentity(dir) {
		return rep, fmt.Errorf("%s holds a node identity (pki/): a fresh import needs an empty data dir (import into the running cluster without --node-id)", dir)
	}
	var archive bytes.Buffer
	if _, err := cluster.WriteStateArchive(context.Background(), &archive, nodeID, index, 1, state, currentBuild().Version); err != nil {
		return rep, err
	}
	check := fsm.New(nil)
	if _, err := cluster.RestoreBackup(cluster.RestoreTarget{DataDir: dir, NodeID: nodeID, Address: addr}, &archive,
		func(st io.Reader) error { return check.Restore(io.NopCloser(st)) }); err != nil {
		return rep, err
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("written into %s: start it with halapi serve --data-dir %s --node-id %s (same --cluster-listen/--cluster-advertise)", dir, dir, nodeID))
	return rep, nil
}

func printImportReport(rep importer.Report, dryRun bool) {
	verb := "added"
	if dryRun || !rep.Applied {
		verb = "to add"
	}
	rows := make([][]string, 0, len(rep.Counts))
	for _, c := range rep.Counts {
		rows = append(rows, []string{c.Kind, fmt.Sprint(c.Add), fmt.Sprint(c.Present), fmt.Sprint(c.NotCarried)})
	}
	table("KIND\t"+strings.ToUpper(verb)+"\tALREADY PRESENT\tNOT CARRIED", rows)
	if len(rep.Skipped) > 0 {
		fmt.Println("\nNot carried:")
		perReason := map[string]int{}
		for _, s := range rep.Skipped {
			k := s.Kind + "\x00" + s.Reason
			perReason[k]++
			if perReason[k] <= maxSkipLines {
				fmt.Printf("  %s %s: %s\n", s.Kind, s.Item, s.Reason)
			}
		}
		for k, n := range perReason {
			if n > maxSkipLines {
				kind, reason, _ := strings.Cut(k, "\x00")
				fmt.Printf("  … and %d more %s: %s (-o json lists all)\n", n-maxSkipLines, kind, reason)
			}
		}
	}
	for _, n := range rep.Notes {
		fmt.Println("Note:", n)
	}
	if dryRun {
		fmt.Println("Dry run: nothing was changed.")
	}
}
