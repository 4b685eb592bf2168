package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/lapi/models"
	"github.com/spf13/pflag"
)

// flushAutoFlags are CrowdSec's db_config.flush agents_autodelete,
// bouncers_autodelete and metrics_max_age as serve flags. Durations take
// days like CrowdSec's ("30d", "1d12h"); empty means off.
type flushAutoFlags struct {
	agentsCert, agentsPassword, bouncersCert, bouncersAPIKey string
	metricsMaxAge                                            string
	interval                                                 time.Duration
}

func bindFlushAutoFlags(fl *pflag.FlagSet, f *flushAutoFlags) {
	fl.StringVar(&f.agentsCert, "flush-agents-autodelete-cert", "", "the leader deletes certificate machines without a heartbeat for this long and owning no alert (e.g. 30d; empty: never)")
	fl.StringVar(&f.agentsPassword, "flush-agents-autodelete-password", "", "the leader deletes password machines without a heartbeat for this long and owning no alert (empty: never)")
	fl.StringVar(&f.bouncersCert, "flush-bouncers-autodelete-cert", "", "the leader deletes certificate bouncers that have not pulled for this long (empty: never)")
	fl.StringVar(&f.bouncersAPIKey, "flush-bouncers-autodelete-api-key", "", "the leader deletes API-key bouncers that have not pulled for this long (empty: never)")
	fl.StringVar(&f.metricsMaxAge, "flush-metrics-max-age", "7d", "usage metrics older than this are dropped (db_config.flush.metrics_max_age)")
	fl.DurationVar(&f.interval, "flush-interval", time.Minute, "how often the leader runs the retention: alert flush, unvalidated machines, autodelete (CrowdSec: every minute)")
}

// apply sets the autodelete ages of cfg.
func (f flushAutoFlags) apply(cfg *lapi.Config) error {
	parse := func(flag, v string) (int64, error) {
		if v == "" {
			return 0, nil
		}
		d, err := models.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("invalid --%s %q: want a positive duration such as 30d or 12h", flag, v)
		}
		return int64(d), nil
	}
	if f.interval <= 0 {
		return errors.New("--flush-interval must be > 0")
	}
	cfg.FlushEvery = f.interval
	var ad fsm.AutoDelete
	var err error
	for _, x := range []struct {
		flag, v string
		dst     *int64
	}{{"flush-agents-autodelete-cert", f.agentsCert, &ad.AgentsCert}, {"flush-agents-autodelete-password", f.agentsPassword, &ad.AgentsPassword},
		{"flush-bouncers-autodelete-cert", f.bouncersCert, &ad.BouncersCert}, {"flush-bouncers-autodelete-api-key", f.bouncersAPIKey, &ad.BouncersAPIKey}} {
		if *x.dst, err = parse(x.flag, x.v); err != nil {
			return err
		}
	}
	m, err := parse("flush-metrics-max-age", f.metricsMaxAge)
	if err != nil {
		return err
	}
	cfg.AutoDelete, cfg.MetricsMaxAge = ad, time.Duration(m)
	if m == 0 {
		cfg.MetricsMaxAge = lapi.DefaultConfig().MetricsMaxAge
	}
	return nil
}
