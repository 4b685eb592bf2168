package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Units of the figures.
const (
	unitRPS       = "req/s"
	unitAlerts    = "alerts/s"
	unitDecisions = "decisions/s"
	unitMS        = "ms"
	unitMB        = "MB"
	unitMiB       = "MiB"
	unitS         = "s"
	unitKiB       = "KiB"
	unitEntries   = "entries/s"
)

// metric is one line of the report.
type metric struct {
	Key   string  `json:"key"`
	Name  string  `json:"name"`
	Unit  string  `json:"unit"`
	Value float64 `json:"value"`
	// Target is the goal in words; "-" (possibly followed by a reference
	// figure) for informational lines.
	Target string `json:"target"`
	// Bare is the same figure for the bare net/http handler (0: none).
	Bare float64 `json:"bare,omitempty"`
	// Ref is, instead of a bare handler, the same figure for the halapi
	// setup this one is compared with (RefName: "leader", "plain HTTP"...);
	// it is printed in the bare handler's column.
	Ref     float64 `json:"ref,omitempty"`
	RefName string  `json:"ref_name,omitempty"`
	// Ratio is halapi / bare (or Value / Ref): the median of the per-run
	// ratios (the runs alternate), or Value / Bare (Ref) when not set by
	// the phase.
	Ratio float64 `json:"ratio,omitempty"`
	// Pass is nil for informational lines.
	Pass   *bool  `json:"pass,omitempty"`
	Errors int64  `json:"errors,omitempty"`
	Note   string `json:"note,omitempty"`
}

func (m *metric) judge(ok bool) { m.Pass = &ok }

// report is everything one run measured.
type report struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Env      struct {
		GoVersion string `json:"go_version"`
		OS        string `json:"os"`
		Arch      string `json:"arch"`
		CPUs      int    `json:"cpus"`
		// LoadAvg is /proc/loadavg at the start: other work on the machine
		// skews every figure.
		LoadAvg string `json:"loadavg,omitempty"`
	} `json:"env"`
	Config   config `json:"config"`
	Duration string `json:"duration"`
	Idle     string `json:"idle"`
	// RetryBudget and RetrySpent: time allowed for, and spent on, load runs
	// redone because other processes disturbed them.
	RetryBudget string                  `json:"retry_budget"`
	RetrySpent  string                  `json:"retry_spent"`
	Metrics     []*metric               `json:"metrics"`
	Missed      []string                `json:"missed"`
	Notes       []string                `json:"notes,omitempty"`
	Errors      []string                `json:"errors,omitempty"`
	Runs        map[string][]loadResult `json:"runs"`
	StreamMS    map[string][]float64    `json:"stream_ms,omitempty"`
	// Disturbed is set when some load run was kept although other processes
	// used the CPU during it.
	Disturbed bool `json:"disturbed"`
}

func newReport(cfg config) *report {
	r := &report{Started: time.Now().UTC(), Config: cfg, Duration: cfg.Duration.String(), Idle: cfg.Idle.String(),
		RetryBudget: cfg.RetryBudget.String(), RetrySpent: "0s", Runs: map[string][]loadResult{}, Missed: []string{}}
	r.Env.GoVersion = runtime.Version()
	r.Env.OS, r.Env.Arch, r.Env.CPUs = runtime.GOOS, runtime.GOARCH, runtime.NumCPU()
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			r.Env.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return r
}

func (r *report) add(m *metric) *metric {
	if m.Bare > 0 && m.Ratio == 0 {
		m.Ratio = m.Value / m.Bare
	}
	if m.Ref > 0 && m.Ratio == 0 {
		m.Ratio = m.Value / m.Ref
	}
	r.Metrics = append(r.Metrics, m)
	return m
}

func formatValue(v float64, unit string) string {
	switch unit {
	case unitRPS, unitAlerts, unitDecisions:
		return thousands(v) + " " + unit
	case unitMS:
		switch {
		case v < 1:
			return fmt.Sprintf("%.3f ms", v)
		case v < 10:
			return fmt.Sprintf("%.2f ms", v)
		default:
			return fmt.Sprintf("%.1f ms", v)
		}
	case unitMB:
		return fmt.Sprintf("%.2f MB", v)
	case unitMiB:
		return fmt.Sprintf("%.0f MiB", v)
	case unitS:
		return fmt.Sprintf("%.3f s", v)
	case unitKiB:
		return fmt.Sprintf("%.1f KiB", v)
	case unitEntries:
		return fmt.Sprintf("%.2f entries/s", v)
	}
	return fmt.Sprintf("%g %s", v, unit)
}

func (r *report) print(w io.Writer) {
	// Missed targets are recomputed here so a partial report is right too.
	r.Missed = r.Missed[:0]
	for _, m := range r.Metrics {
		if m.Pass != nil && !*m.Pass {
			r.Missed = append(r.Missed, strings.TrimSpace(m.Name))
		}
	}

	c := r.Config
	fmt.Fprintf(w, "\nhalapi-bench  %s  %s/%s, %d CPUs, %s", r.Started.Format(time.RFC3339), r.Env.OS, r.Env.Arch, r.Env.CPUs, r.Env.GoVersion)
	if r.Env.LoadAvg != "" {
		fmt.Fprintf(w, ", load average at start %s", r.Env.LoadAvg)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "binary %s; %s per load run (+%s warm-up), median of %d run(s); stream: median of %d fetches\n",
		c.Bin, c.Duration, c.warmup(), c.Runs, c.StreamRuns)
	transport := "plain HTTP/1.1 (halapi with --plain-http when it has it)"
	if c.TLS {
		transport = "HTTPS, HTTP/1.1 (halapi's built-in CA; bare handler with a self-signed P-256 certificate)"
	}
	fmt.Fprintf(w, "transport: %s, keep-alive connections", transport)
	if c.Phases["cluster"] || c.Phases["capi"] || c.Phases["tls"] {
		fmt.Fprint(w, "; the cluster and capi phases use plain HTTP, the tls phase both")
	}
	fmt.Fprintln(w)
	if r.Finished.IsZero() {
		fmt.Fprintf(w, "disturbed load runs redone: %s of a %s budget\n", r.RetrySpent, r.RetryBudget)
	} else {
		fmt.Fprintf(w, "took %s; disturbed load runs redone: %s of a %s budget\n", r.Finished.Sub(r.Started).Round(time.Second), r.RetrySpent, r.RetryBudget)
	}
	fmt.Fprintf(w, "bare handler = net/http on loopback in the benchmark process, same load generator, same run;\nratio = halapi / bare, the median of the per-run ratios (bare and halapi runs alternate);\n"+
		"\"NAME: figure\" in that column is another halapi setup measured the same way instead (leader, plain HTTP...)\n\n")

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\thalapi\ttarget\tbare handler / ratio\tresult")
	fmt.Fprintln(tw, "------\t------\t------\t-------------------\t------")
	for _, m := range r.Metrics {
		bare := "-"
		switch {
		case m.Bare > 0:
			bare = fmt.Sprintf("%s / %.2fx", formatValue(m.Bare, m.Unit), m.Ratio)
		case m.Ref > 0:
			bare = fmt.Sprintf("%s: %s / %.2fx", m.RefName, formatValue(m.Ref, m.Unit), m.Ratio)
		}
		result := "info"
		if m.Pass != nil {
			result = "PASS"
			if !*m.Pass {
				result = "MISSED"
			}
		}
		val := formatValue(m.Value, m.Unit)
		if m.Errors > 0 {
			val += fmt.Sprintf(" (%d errors)", m.Errors)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, val, m.Target, bare, result)
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	if r.Disturbed {
		fmt.Fprintln(w, "WARNING: other processes used the CPU during some load runs (see the notes): rerun on a quiet machine")
	}
	if len(r.Missed) == 0 {
		if len(r.Errors) == 0 {
			fmt.Fprintln(w, "All targets met.")
		}
	} else {
		fmt.Fprintf(w, "TARGETS MISSED (%d): %s\n", len(r.Missed), strings.Join(r.Missed, "; "))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "ERROR: %s\n", e)
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
