package profiles

import (
	"io"
	"log/slog"
	"time"

	"github.com/expr-lang/expr"

	"github.com/halapi/halapi/lapi/models"
)

// Eval compiles src in the profile environment (the Alert variable and every
// helper, with the HelperConfig in force) and runs it over alert, as a
// profile's duration_expr would be; store answers the decision helpers (nil:
// they return 0) and now is the time they use. Compile errors are one line.
// It serves the differential test against the reference and tooling; the
// LAPI itself evaluates through Engine.
func Eval(src string, alert *models.Alert, store Store, now time.Time) (any, error) {
	prog, err := compile(src, false)
	if err != nil {
		return nil, err
	}
	return expr.Run(prog, env{Alert: alert, store: store, now: now, logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}
