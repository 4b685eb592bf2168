package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// contender is one side of a comparison between halapi setups (leader and
// follower, plain HTTP and HTTPS...).
type contender struct {
	name string
	run  func(context.Context) (loadResult, error)
}

// rounds runs b.cfg.Runs rounds in which every contender runs once, one
// after the other; with alternate, every other round runs them in reverse
// order (so that a store growing over the runs does not always favour the
// same side). A round during which other processes used the CPU is run
// again, up to pairAttempts times and while the run's -retry-budget lasts;
// one still disturbed is kept and flagged. It returns the results per
// contender, in round order.
func (b *bench) rounds(ctx context.Context, name string, alternate bool, cs []contender, show func(loadResult) string) ([][]loadResult, error) {
	out := make([][]loadResult, len(cs))
	disturbed, overBudget := 0, 0
	for r := 0; r < b.cfg.Runs; r++ {
		got := make([]loadResult, len(cs))
		for attempt := 1; ; attempt++ {
			order := make([]int, len(cs))
			for i := range order {
				order[i] = i
			}
			if alternate && r%2 == 1 {
				slices.Reverse(order)
			}
			t0 := time.Now()
			other := 0.0
			for _, i := range order {
				res, err := cs[i].run(ctx)
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", name, cs[i].name, err)
				}
				got[i] = res
				other = max(other, res.OtherCores)
			}
			took := time.Since(t0)
			parts := make([]string, len(cs))
			for k, i := range order {
				parts[k] = cs[i].name + " " + show(got[i])
			}
			b.progress("%s run %d/%d: %s; other processes %.2f cores", name, r+1, b.cfg.Runs, strings.Join(parts, "; "), other)
			if other <= disturbedCores {
				break
			}
			if attempt == pairAttempts {
				disturbed++
				break
			}
			if b.retrySpent+took > b.cfg.RetryBudget {
				disturbed++
				overBudget++
				b.progress("%s run %d/%d: disturbed by other processes; kept (retry budget of %s used up)", name, r+1, b.cfg.Runs, b.cfg.RetryBudget)
				break
			}
			b.retrySpent += took
			b.progress("%s run %d/%d: disturbed by other processes, running the round again", name, r+1, b.cfg.Runs)
		}
		for i := range cs {
			out[i] = append(out[i], got[i])
		}
	}
	if disturbed > 0 {
		why := fmt.Sprintf("even after %d attempts", pairAttempts)
		if overBudget > 0 {
			why = fmt.Sprintf("and kept (%d after %d attempts, %d once the -retry-budget of %s was used up)",
				disturbed-overBudget, pairAttempts, overBudget, b.cfg.RetryBudget)
		}
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("%s: %d of %d rounds were disturbed by other processes (> %.2f cores) %s: those figures are low",
			name, disturbed, b.cfg.Runs, disturbedCores, why))
		b.rep.Disturbed = true
	}
	return out, nil
}

// otherCores is the CPU the rest of the machine (neither this process nor
// the processes sampled) used between two samples, in cores; -1 when
// unknown.
func otherCores(c0, c1 cpuSample, d time.Duration) float64 {
	if c0.err != nil || c1.err != nil || d <= 0 {
		return -1
	}
	other := (c1.machine - c0.machine) - (c1.self - c0.self) - (c1.server - c0.server) - (c1.peers - c0.peers)
	return max(0, other.Seconds()/d.Seconds())
}

// showQuery is the progress summary of a query run.
func showQuery(r loadResult) string {
	out := fmt.Sprintf("%s req/s (p50 %s, %d errors)", thousands(r.RPS), r.P50.Round(time.Microsecond), r.Errors)
	if r.FirstError != "" {
		out += "; first error: " + r.FirstError
	}
	return out
}

// showIngest is the progress summary of an ingestion run.
func showIngest(r loadResult) string {
	out := fmt.Sprintf("%s alerts/s (batch p50 %s, %d errors)", thousands(r.UnitsPerS), r.P50.Round(time.Microsecond), r.Errors)
	if r.FirstError != "" {
		out += "; first error: " + r.FirstError
	}
	return out
}

// durationStats is the count, p50, p99 and max of a set of durations, in
// milliseconds.
type durationStats struct {
	N             int
	P50, P99, Max float64
}

func statsOf(ds []time.Duration) durationStats {
	if len(ds) == 0 {
		return durationStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return durationStats{N: len(s), P50: ms(percentile(s, 0.50)), P99: ms(percentile(s, 0.99)), Max: ms(s[len(s)-1])}
}

func (d durationStats) String() string {
	return fmt.Sprintf("p50 %s, p99 %s, max %s (n=%d)", formatValue(d.P50, unitMS), formatValue(d.P99, unitMS), formatValue(d.Max, unitMS), d.N)
}
