package lapi

import (
	"context"
	"time"

	"github.com/halapi/halapi/cluster"
)

// LeaderJobs are lapi's leader-only jobs, for cluster.Node.AddLeaderJob:
// jwt-key (EnsureJWTKey, each attempt bounded by 10 s, retried 200 ms →
// 10 s) and retention (Retention, retried 500 ms → 30 s).
func (s *Server) LeaderJobs() []cluster.LeaderJob {
	return []cluster.LeaderJob{
		{Name: "jwt-key", MinBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second,
			Run: func(ctx context.Context) error {
				jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				return s.EnsureJWTKey(jctx)
			}},
		{Name: "retention", Run: s.Retention},
	}
}

// WaitJWTKey waits, at most max (and not beyond ctx), until the cluster's
// JWT key is in the local state, and reports whether it is: a fresh node
// elects itself and creates the cluster secrets within a second, and the
// first login should not get a 503. A node whose peers are down starts
// without it (reads keep working, writes wait for a leader).
func (s *Server) WaitJWTKey(ctx context.Context, max time.Duration) bool {
	wctx, cancel := context.WithTimeout(ctx, max)
	defer cancel()
	for len(s.fsm.JWTKey()) == 0 && wctx.Err() == nil {
		select {
		case <-wctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return len(s.fsm.JWTKey()) > 0
}
