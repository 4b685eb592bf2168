package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"github.com/halapi/halapi/admin"
	"github.com/spf13/cobra"
)

// debugCmd is `halapi debug`: the runtime's profiles and execution traces
// of the running node of --data-dir, through its admin socket
// (admin.DebugRoutes), for go tool pprof and go tool trace.
func debugCmd() *cobra.Command {
	var dataDir string
	c := &cobra.Command{
		Use:   "debug",
		Short: "CPU and heap profiles, goroutine dumps and execution traces of the running node (admin socket)",
		Long: `Take a profile or an execution trace of the running node of --data-dir, through its admin
socket (the node's user or root only). A CPU profile or a trace costs the node CPU while it
runs; the node takes one at a time. Read profiles with 'go tool pprof FILE', traces with
'go tool trace FILE'.`,
	}
	c.PersistentFlags().StringVar(&dataDir, "data-dir", "halapi-data", "data dir of the local node")

	type spec struct {
		use, short, route string
		seconds           int // default --seconds; 0: no --seconds
		query             url.Values
		outDefault        string
	}
	for _, s := range []spec{
		{use: "profile", short: "A CPU profile over --seconds (pprof format, for go tool pprof)", route: "profile", seconds: 30, outDefault: "halapi-cpu.pprof"},
		{use: "trace", short: "An execution trace over --seconds (for go tool trace; large on a busy node)", route: "trace", seconds: 5, outDefault: "halapi.trace"},
		{use: "heap", short: "A heap profile: live and allocated memory by call site (pprof format)", route: "heap", outDefault: "halapi-heap.pprof"},
		{use: "goroutines", short: "Every goroutine's stack, as text (as in a panic: what each waits on and since when)", route: "goroutine",
			query: url.Values{"debug": {"2"}}, outDefault: "-"},
	} {
		var seconds int
		var out string
		sub := &cobra.Command{
			Use:   s.use,
			Short: s.short,
			Args:  cobra.NoArgs,
			RunE: func(*cobra.Command, []string) error {
				q := url.Values{}
				for k, v := range s.query {
					q[k] = v
				}
				if s.seconds > 0 {
					if seconds < admin.MinDebugSeconds || seconds > admin.MaxDebugSeconds {
						return fmt.Errorf("--seconds must be between %d and %d", admin.MinDebugSeconds, admin.MaxDebugSeconds)
					}
					q.Set("seconds", strconv.Itoa(seconds))
				}
				if out == "" {
					return fmt.Errorf("--out must name a file (- for stdout)")
				}
				a, err := admin.NewClient(dataDir)
				if err != nil {
					return err
				}
				path := admin.DebugPrefix + "/" + s.route
				if len(q) > 0 {
					path += "?" + q.Encode()
				}
				if err := download(a, path, out); err != nil {
					return err
				}
				if out != "-" {
					fmt.Fprintf(os.Stderr, "%s written to %s\n", s.use, out)
				}
				return nil
			},
		}
		if s.seconds > 0 {
			sub.Flags().IntVar(&seconds, "seconds", s.seconds, fmt.Sprintf("how long to record (%d to %d)", admin.MinDebugSeconds, admin.MaxDebugSeconds))
		}
		sub.Flags().StringVar(&out, "out", s.outDefault, "file to write (- for stdout)")
		sub.Flags().Lookup("out").Value = named{sub.Flags().Lookup("out").Value, "FILE"}
		c.AddCommand(sub)
	}
	return c
}

// download writes an admin route's answer to out ("-": stdout) without a
// timeout (Download: a 120 s profile outlasts the 30 s of JSON calls). A
// file is written beside out and renamed once complete, so a failed
// capture leaves no truncated profile behind.
func download(a *admin.Client, path, out string) error {
	if out == "-" {
		return a.Download(path, os.Stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".*.tmp")
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
	if err := a.Download(path, tmp); err != nil {
		return err
	}
	if st, err := tmp.Seek(0, io.SeekCurrent); err == nil && st == 0 {
		return fmt.Errorf("the node sent an empty answer to %s", path)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
