package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/halapi/halapi/internal/testharness"
)

// profileNodes records a CPU profile of every running node of c while a
// load run goes to entry (`halapi debug profile` on each node's admin
// socket, for the run's length less a second), when -profile-dir is set.
// The files are named <phase>-via-<leader|follower>-<n>-<role>-<node>.pprof,
// role being entry (the node the load goes to; in a pull, the queried
// follower), leader or other. The
// returned func waits for the profiles; it is a no-op without
// -profile-dir.
func (b *bench) profileNodes(ctx context.Context, c *cluster, phase string, entry, leader *server) func() {
	return b.profileNodesFor(ctx, c, phase, entry, leader, max(1, int(b.cfg.Duration/time.Second)-1))
}

// profileNodesFor is profileNodes for secs seconds.
func (b *bench) profileNodesFor(ctx context.Context, c *cluster, phase string, entry, leader *server, secs int) func() {
	if b.cfg.ProfileDir == "" {
		return func() {}
	}
	via := "via-follower"
	if entry == leader {
		via = "via-leader"
	}
	b.profiled++
	var wg sync.WaitGroup
	for _, nd := range c.nodes {
		if !nd.running() {
			continue
		}
		role := "other"
		switch nd {
		case entry:
			role = "entry"
		case leader:
			role = "leader"
		}
		out := filepath.Join(b.cfg.ProfileDir, fmt.Sprintf("%s-%s-%d-%s-%s.pprof", phase, via, b.profiled, role, strings.ReplaceAll(nd.name, "/", "_")))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := testharness.CLI(ctx, time.Duration(secs)*time.Second+cliTimeout, nd.bin, nd.dataDir, "debug", "profile", "--seconds", fmt.Sprint(secs), "--out", out); err != nil {
				b.progress("profile of %s: %v", nd.name, err)
			}
		}()
	}
	return wg.Wait
}
