package lapi

import (
	"context"

	"github.com/halapi/halapi/fsm"
)

// AutoDelete (run by the leader's retention job every FlushEvery) deletes
// the machines and bouncers not seen for longer than cfg.AutoDelete's ages
// (CrowdSec's flush agents_autodelete and bouncers_autodelete). The leader
// writes an entry only when its state shows something due; Apply decides
// again with the entry's time, so every node deletes the same rows.
//
// It then drops the usage-metrics records older than MetricsMaxAge
// (flush.metrics_max_age), again with one entry only when one is due.
func (s *Server) AutoDelete(ctx context.Context) error {
	if err := s.flushUsage(ctx); err != nil {
		return err
	}
	if s.cfg.AutoDelete == (fsm.AutoDelete{}) {
		return nil
	}
	machines, bouncers := s.fsm.AutoDeleteDue(s.cfg.AutoDelete, s.now())
	if len(machines)+len(bouncers) == 0 {
		return nil
	}
	res, err := s.apply(ctx, fsm.CmdAutoDelete, s.cfg.AutoDelete)
	if err != nil {
		return err
	}
	s.log.Info("auto-deleted machines and bouncers not seen for too long (db_config.flush *_autodelete)",
		"deleted", res.N, "machines", machines, "bouncers", bouncers)
	return nil
}

// flushUsage writes a UsageFlush when some usage record is older than
// MetricsMaxAge on the leader's clock.
func (s *Server) flushUsage(ctx context.Context) error {
	if s.cfg.MetricsMaxAge <= 0 {
		return nil
	}
	before := s.now().Add(-s.cfg.MetricsMaxAge).UnixNano()
	if !s.fsm.UsageOlderThan(before) {
		return nil
	}
	res, err := s.apply(ctx, fsm.CmdUsageFlush, fsm.UsageFlush{Before: before})
	if err != nil {
		return err
	}
	s.log.Info("dropped usage metrics older than flush.metrics_max_age", "records", res.N)
	return nil
}
