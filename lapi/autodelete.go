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
// MetricsMaxAge (flush.metrics_max_age) has nothing to age here: a node
// keeps only each component's latest usage-metrics report, on its machine
// or bouncer row.
func (s *Server) AutoDelete(ctx context.Context) error {
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
