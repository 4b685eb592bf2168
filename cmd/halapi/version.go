package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/halapi/halapi/fsm"
	"github.com/spf13/cobra"
)

// Set at build time by the Makefile:
//
//	-ldflags "-X main.version=v1.2.3 -X main.commit=abc1234"
//
// Without them (go build, go install) the module version and the VCS
// stamp Go records in the binary are used.
var (
	version string
	commit  string
)

// buildInfo is what `halapi version` prints.
type buildInfo struct {
	Version     string  `json:"version"`
	Commit      string  `json:"commit"`
	CommitTime  string  `json:"commit_time,omitempty"`
	Modified    bool    `json:"modified,omitempty"`
	GoVersion   string  `json:"go_version"`
	Platform    string  `json:"platform"`
	EntryFormat int     `json:"raft_entry_format"`
	Commands    []uint8 `json:"command_types"`
	Extensions  []uint8 `json:"command_extensions"`
}

func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, EntryFormat: fsm.EntryFormat,
		Commands: fsm.CommandTypes(), Extensions: fsm.Extensions()}
	if b.Extensions == nil {
		b.Extensions = []uint8{}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Commit == "" {
					b.Commit = s.Value
					if len(b.Commit) > 12 {
						b.Commit = b.Commit[:12]
					}
				}
			case "vcs.time":
				b.CommitTime = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true" && commit == ""
			}
		}
	}
	if b.Version == "" {
		b.Version = "dev"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

func (b buildInfo) short() string { return b.Version + " (" + b.Commit + ")" }

func (b buildInfo) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "halapi %s\n", b.Version)
	c := b.Commit
	if b.Modified {
		c += " (modified)"
	}
	if b.CommitTime != "" {
		c += " " + b.CommitTime
	}
	fmt.Fprintf(&sb, "commit:            %s\n", c)
	fmt.Fprintf(&sb, "go:                %s %s\n", b.GoVersion, b.Platform)
	fmt.Fprintf(&sb, "raft entry format: %d\n", b.EntryFormat)
	fmt.Fprintf(&sb, "command types:     %s\n", typeList(b.Commands))
	fmt.Fprintf(&sb, "extensions:        %s (beyond the baseline; gated until every voter has them)\n", typeList(b.Extensions))
	return sb.String()
}

func typeList(ts []uint8) string {
	if len(ts) == 0 {
		return "none"
	}
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = fmt.Sprint(t)
	}
	return strings.Join(s, ",")
}

func versionCmd() *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and the raft command formats this build applies",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b := currentBuild()
			switch output {
			case "json":
				return printJSON(b)
			case "human":
				fmt.Print(b.String())
				return nil
			}
			return fmt.Errorf("unknown output format %q (human or json)", output)
		},
	}
	c.Flags().StringVarP(&output, "output", "o", "human", "output format: human or json")
	return c
}
