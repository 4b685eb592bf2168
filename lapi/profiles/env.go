package profiles

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/halapi/halapi/lapi/models"
)

// Store answers the decision-database helpers. Implemented by the replicated FSM elsewhere.
// It is called synchronously from Engine.Apply, so it must be safe for concurrent use when
// Apply is, and should answer from local state (no network round trip).
type Store interface {
	// CountDecisions returns the number of stored decisions (active and expired, any origin/type/scope,
	// simulated included) whose IP interval contains value (IP or CIDR, same family). Non-IP value -> 0.
	// If since is non-zero only decisions created after since count. If activeOnly, only until > now.
	CountDecisions(value string, since time.Time, activeOnly bool, now time.Time) int
	// ActiveTimeLeft: remaining time of the active covering decision with the latest until; 0 if none.
	ActiveTimeLeft(value string, now time.Time) time.Duration
}

// env is the expression environment: the single variable Alert, plus the
// helpers that depend on per-evaluation state (the store, the evaluation
// time, the logger). expr exposes the exported methods of a struct env as
// global functions with their Go signatures, so they are type-checked at
// compile time like the expr.Function helpers, while still reaching the
// state of the current evaluation (which expr.Function closures, bound at
// compile time, cannot).
type env struct {
	Alert *models.Alert `expr:"Alert"`

	store  Store
	now    time.Time
	logger *slog.Logger
}

// GetDecisionsCount counts stored decisions (active or expired) covering value.
func (e env) GetDecisionsCount(value string) int {
	if e.store == nil {
		return 0
	}
	return e.store.CountDecisions(value, time.Time{}, false, e.now)
}

// GetDecisionsSinceCount counts stored decisions covering value created in the
// last `since` (a duration, "Nd" prefix allowed). An unparsable since gives 0.
func (e env) GetDecisionsSinceCount(value, since string) int {
	if e.store == nil {
		return 0
	}
	d, err := models.ParseDuration(since)
	if err != nil {
		e.logger.Warn("GetDecisionsSinceCount: invalid duration", "since", since, "error", err)
		return 0
	}
	return e.store.CountDecisions(value, e.now.Add(-d), false, e.now)
}

// GetActiveDecisionsCount counts active (until > now) decisions covering value.
func (e env) GetActiveDecisionsCount(value string) int {
	if e.store == nil {
		return 0
	}
	return e.store.CountDecisions(value, time.Time{}, true, e.now)
}

// GetActiveDecisionsTimeLeft is the remaining time of the longest active
// decision covering value, 0 if none.
func (e env) GetActiveDecisionsTimeLeft(value string) time.Duration {
	if e.store == nil {
		return 0
	}
	return e.store.ActiveTimeLeft(value, e.now)
}

// TimeNow returns the evaluation time, UTC, RFC 3339.
func (e env) TimeNow() string {
	return e.now.UTC().Format(time.RFC3339)
}

// LogInfo logs a formatted message at info level and returns true (so it can
// be chained in a filter with &&).
func (e env) LogInfo(format string, args ...any) bool {
	e.logger.Info(fmt.Sprintf(format, args...), "source", "profile expression")
	return true
}
