package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"
)

// Phase scale-stream (not in the default set): only the scale phase's
// startup figures on one server, without the cluster steps — the storm of
// -storm-bouncers startups on -storm-decisions, then the startup stream of
// -scale-decisions timed to its last byte (the scale phase's
// scale_stream_ms, with the same client), plus the same fetch asking for
// gzip as every Go bouncer does, and the server's CPU per fetch.
func (b *bench) phaseScaleStream(ctx context.Context) error {
	cfg := b.cfg
	b.progress("scale-stream: a server with %s decisions, %d bouncers starting at once", thousands(float64(cfg.StormDecisions)), cfg.StormBouncers)
	s, err := b.start(ctx, "scale-stream", "--flush-max-items", "10000000")
	if err != nil {
		return err
	}
	defer s.stop()
	token, err := s.addMachine(ctx, "bench-loader")
	if err != nil {
		return err
	}
	if _, err := loadDecisions(ctx, s, token, cfg.StormDecisions); err != nil {
		return err
	}
	keys, err := registerBouncers(ctx, s, "storm", cfg.StormBouncers)
	if err != nil {
		return err
	}
	if err := b.firstStorm(ctx, s, keys); err != nil {
		return err
	}
	b.progress("scale-stream: loading up to %s decisions", thousands(float64(cfg.ScaleDecisions)))
	if _, err := loadRange(ctx, s, token, cfg.StormDecisions, cfg.ScaleDecisions); err != nil {
		return err
	}
	if err := b.scaleStream(ctx, s, keys[0]); err != nil {
		return err
	}
	return b.scaleStreamCPU(ctx, s, keys[0])
}

// scaleStreamCPU fetches the startup stream of cfg.ScaleDecisions cold
// (each fetch > the 1 s share window after the previous one), without and
// with gzip, and reports the median time to the last byte and the
// server's CPU time per fetch: the wall times are disturbed on a shared
// machine, the CPU times much less.
func (b *bench) scaleStreamCPU(ctx context.Context, s *server, key string) error {
	cfg := b.cfg
	nd := thousands(float64(cfg.ScaleDecisions))
	for _, gz := range []bool{false, true} {
		client := s.client(1, 2*time.Minute)
		var durs, cpus []time.Duration
		var size int64
		for range min(cfg.StreamRuns, 5) {
			sleepUntil(ctx, time.Now().Add(1100*time.Millisecond))
			c0, err := cpuTime(s.pid())
			if err != nil {
				return err
			}
			d, n, err := fetchStreamEnc(ctx, client, s.url, key, gz)
			if err != nil {
				return err
			}
			c1, err := cpuTime(s.pid())
			if err != nil {
				return err
			}
			durs, cpus, size = append(durs, d), append(cpus, c1-c0), n
		}
		client.CloseIdleConnections()
		slices.Sort(durs)
		slices.Sort(cpus)
		enc := "identity"
		if gz {
			enc = "gzip"
		}
		b.rep.add(&metric{Key: "scale_stream_cold_" + enc + "_ms", Name: fmt.Sprintf("  cold startup stream, %s decisions, %s (%.0f MB sent), to the last byte", nd, enc, float64(size)/1e6),
			Unit: unitMS, Value: ms(durs[len(durs)/2]), Target: "- (reported)"})
		b.rep.add(&metric{Key: "scale_stream_cold_" + enc + "_cpu_ms", Name: "    server CPU per fetch", Unit: unitMS, Value: ms(cpus[len(cpus)/2]), Target: "- (reported)"})
		b.rep.Notes = append(b.rep.Notes, fmt.Sprintf("scale-stream: cold %s fetches of %s decisions: %v (server CPU %v)", enc, nd, durs, cpus))
	}
	return nil
}

// fetchStreamEnc GETs the startup stream, asking for gzip or not, reads it
// to the last byte (compressed bytes are counted, not decompressed: what
// crosses the wire) and returns the time and the byte count.
func fetchStreamEnc(ctx context.Context, client *http.Client, base, key string, gz bool) (time.Duration, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/decisions/stream?startup=true", nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("X-Api-Key", key)
	req.Header.Set("User-Agent", bouncerUA)
	if gz {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return 0, 0, fmt.Errorf("GET stream: status %d: %s", resp.StatusCode, body)
	}
	if gz && resp.Header.Get("Content-Encoding") != "gzip" {
		return 0, 0, fmt.Errorf("GET stream: asked for gzip, got Content-Encoding %q", resp.Header.Get("Content-Encoding"))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	return time.Since(t0), n, err
}
