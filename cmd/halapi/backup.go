package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/datadir"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/pki"
	"github.com/spf13/cobra"
)

// Backup and disaster recovery:
//
//	cluster snapshot save FILE   a backup from a running node (admin socket)
//	cluster snapshot inspect FILE  check a backup's checksums, print its metadata
//	cluster restore FILE         a new one-node cluster from a backup (empty data dir, node stopped)
//	cluster recover --voters …   rewrite a stopped node's configuration after a lost quorum

func snapshotSaveCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Write a backup of the cluster state (a raft snapshot of this node's FSM) to FILE (- for stdout)",
		Long: `Write a backup of the replicated state to FILE, from any running node (through its admin
socket): a raft snapshot of the node's state machine, taken now, with its raft index, term
and configuration and SHA-256 checksums. A follower's backup holds what it has applied.
The backup holds every secret of the cluster (CA keys, JWT key, password hashes, CAPI
credentials): it is written 0600, keep it like key material. Restore it with
'halapi cluster restore'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			a, err := o.client()
			if err != nil {
				return err
			}
			if args[0] == "-" {
				return a.Download(admin.BackupRoute, os.Stdout)
			}
			dst := args[0]
			tmp, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".*.tmp")
			if err != nil {
				return err
			}
			defer func() {
				_ = tmp.Close()
				_ = os.Remove(tmp.Name())
			}()
			if err := tmp.Chmod(0o600); err != nil {
				return err
			}
			if err := a.Download(admin.BackupRoute, tmp); err != nil {
				return err
			}
			if _, err := tmp.Seek(0, io.SeekStart); err != nil {
				return err
			}
			bm, err := cluster.ReadBackup(tmp, io.Discard)
			if err != nil {
				return fmt.Errorf("the node sent an invalid backup: %w", err)
			}
			if err := tmp.Sync(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), dst); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(bm)
			}
			fmt.Printf("Backup written to %s: raft index %d, term %d, %d bytes of state, taken on %s\n", dst, bm.Index, bm.Term, bm.Size, bm.NodeID)
			if !bm.LeaderSynced {
				fmt.Fprintln(os.Stderr, "warning: no leader answered: the backup holds what this node had applied, maybe not the newest writes")
			}
			return nil
		},
	}
}

func snapshotInspectCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Check a backup's checksums and print what it holds",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			store := fsm.New(nil)
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() {
				err := store.Restore(pr)
				_ = pr.CloseWithError(err)
				done <- err
			}()
			bm, err := cluster.ReadBackup(f, pw)
			_ = pw.CloseWithError(err)
			rerr := <-done
			if err != nil {
				return err
			}
			if rerr != nil {
				return fmt.Errorf("the backup's state does not load: %w", rerr)
			}
			if o.output == "json" {
				return printJSON(bm)
			}
			fmt.Printf("backup of node %s taken %s by halapi %s\nraft index %d, term %d, state %d bytes (checksums OK, state loads)\n",
				bm.NodeID, bm.Created.Local().Format(time.RFC3339), bm.Version, bm.Index, bm.Term, bm.Size)
			var srv []string
			for _, s := range bm.Servers {
				srv = append(srv, s.ID+"="+s.Address)
			}
			fmt.Printf("configuration: %s\n", strings.Join(srv, ", "))
			alerts, active, total := store.Counts(time.Now())
			fmt.Printf("machines %d, bouncers %d, allowlists %d, alerts %d, decisions %d (%d active now)\n",
				len(store.Machines()), len(store.Bouncers()), len(store.Allowlists()), alerts, total, active)
			return nil
		},
	}
}

func restoreCmd(o *adminOpts) *cobra.Command {
	var nodeID, clusterListen, clusterAdvertise string
	c := &cobra.Command{
		Use:   "restore FILE",
		Short: "Make a new one-node cluster from a backup, in an empty --data-dir (node stopped)",
		Long: `Write a backup into an empty data dir as the state of a new cluster whose only voter is
this node. Then start 'halapi serve' on that data dir with the same --node-id and
--cluster-listen (or --cluster-advertise) given here: it leads with the backup's state
(machines, bouncers, decisions, alerts, allowlists, the CA and its certificates, the JWT
key), and further nodes join it with tokens from 'halapi cluster token'.

A running cluster is not restored in place: the backup replaces the CA and the membership
records every node's certificate is checked against.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if nodeID == "" {
				return errors.New("--node-id is required: the id this node will be started with")
			}
			addr := clusterAdvertise
			if addr == "" {
				addr = clusterListen
			}
			dir := o.dataDir
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			unlock, err := datadir.Lock(dir)
			if err != nil {
				return err
			}
			defer unlock()
			if pki.HasIdentity(dir) {
				return fmt.Errorf("%s holds a node identity (pki/): restore into an empty data dir", dir)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			store := fsm.New(nil)
			bm, err := cluster.RestoreBackup(cluster.RestoreTarget{DataDir: dir, NodeID: nodeID, Address: addr}, f,
				func(state io.Reader) error { return store.Restore(io.NopCloser(state)) })
			if err != nil {
				return err
			}
			// The node keeps the cluster's gossip key, as a joined node
			// does; its node certificate is issued by the restored CA
			// when it starts.
			if gk := pki.GossipKeyIn(store); len(gk) > 0 {
				if err := pki.SaveIdentity(filepath.Join(dir, "pki"), &pki.JoinResult{GossipKey: gk}); err != nil {
					return err
				}
			}
			if o.output == "json" {
				return printJSON(bm)
			}
			fmt.Printf("Restored the backup of %s (raft index %d, term %d) into %s as a one-node cluster with voter %s.\n",
				bm.NodeID, bm.Index, bm.Term, dir, nodeID)
			fmt.Printf("Start it with: halapi serve --data-dir %s --node-id %s", dir, nodeID)
			if clusterListen != "" {
				fmt.Printf(" --cluster-listen %s", clusterListen)
			}
			if clusterAdvertise != "" {
				fmt.Printf(" --cluster-advertise %s", clusterAdvertise)
			}
			fmt.Println(" …, then join new nodes with tokens from `halapi cluster token`.")
			return nil
		},
	}
	c.Flags().StringVar(&nodeID, "node-id", "", "id the restored node will be started with (serve --node-id)")
	c.Flags().StringVar(&clusterListen, "cluster-listen", "", "the node's serve --cluster-listen (empty: a node without a cluster port)")
	c.Flags().StringVar(&clusterAdvertise, "cluster-advertise", "", "the node's serve --cluster-advertise, if it has one")
	return c
}

func recoverCmd(o *adminOpts) *cobra.Command {
	var voters []string
	c := &cobra.Command{
		Use:   "recover --voters ID[=HOST:PORT],... --data-dir DIR",
		Short: "After a lost quorum: rewrite a stopped node's raft configuration to the given voters",
		Long: `For a cluster that lost its quorum for good (Consul's peers.json as a command). Stop
every surviving node, run this on each of them with the same --voters (the surviving
node ids; a node missing from this node's last configuration needs =HOST:PORT, its
cluster address), then start them again: they elect a leader among themselves with the
state they hold (a write acknowledged by the lost majority only may be gone). Join new
nodes with tokens from 'halapi cluster token'. Never use it while a quorum can come back:
two clusters would then diverge.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			vs, err := cluster.ParseVoters(voters)
			if err != nil {
				return err
			}
			if _, err := os.Stat(o.dataDir); err != nil {
				return fmt.Errorf("--data-dir %s: %w", o.dataDir, errors.Unwrap(err))
			}
			unlock, err := datadir.Lock(o.dataDir)
			if err != nil {
				return fmt.Errorf("%w: stop the node first", err)
			}
			defer unlock()
			old, err := cluster.LastConfiguration(o.dataDir)
			if err != nil {
				return err
			}
			conf, err := cluster.Recover(o.dataDir, vs, fsm.New(nil))
			if err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(map[string]any{"old": old.Servers, "new": conf.Servers})
			}
			var before, after []string
			for _, s := range old.Servers {
				before = append(before, fmt.Sprintf("%s=%s", s.ID, s.Address))
			}
			for _, s := range conf.Servers {
				after = append(after, fmt.Sprintf("%s=%s", s.ID, s.Address))
			}
			fmt.Printf("Raft configuration of %s rewritten.\nbefore: %s\nafter:  %s\nStart the node(s) again.\n",
				o.dataDir, strings.Join(before, ", "), strings.Join(after, ", "))
			return nil
		},
	}
	c.Flags().StringSliceVar(&voters, "voters", nil, "the voters of the recovered cluster: node ids, each optionally =HOST:PORT (its cluster address)")
	return c
}
