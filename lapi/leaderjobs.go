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
