package profiles

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/expr-lang/expr"
	"github.com/google/uuid"

	"github.com/halapi/halapi/lapi/models"
)

// OriginCrowdsec is the origin of profile-generated decisions.
const OriginCrowdsec = "crowdsec"

// Engine evaluates a fixed list of profiles. It is safe for concurrent use.
type Engine struct {
	profiles []*Profile
	store    Store
	logger   *slog.Logger
}

// NewEngine returns an engine over profiles (in evaluation order). store
// answers the decision helpers; when nil they all return 0.
func NewEngine(profiles []*Profile, store Store) *Engine {
	return &Engine{profiles: profiles, store: store, logger: slog.Default()}
}

// SetLogger replaces the logger (default slog.Default()). Not safe to call
// concurrently with evaluations.
func (e *Engine) SetLogger(l *slog.Logger) {
	if l != nil {
		e.logger = l
	}
}

// Profiles returns the engine's profiles, in evaluation order.
func (e *Engine) Profiles() []*Profile { return e.profiles }

// Match is one profile that matched an alert: the alert must be sent to the
// profile's Notifications.
type Match struct {
	Index   int // position in Profiles()
	Profile *Profile
	// Alert is a shallow copy of the alert as it was when the profile
	// matched (so it carries the decisions attached so far), like the copy
	// the reference hands to its notification broker.
	Alert models.Alert
}

// Apply evaluates the profiles for one alert (spec §2). The alert's source
// scope must already be normalised and its MachineID and UUID set.
//
// An alert without decisions gets the decisions of the first matching profile
// that yields some. An alert with decisions is only evaluated for
// notifications: evaluation errors skip the profile, decisions are never
// changed. The returned error must fail the whole request; it only happens
// for an alert without decisions when a profile whose on_error is unset or
// unknown fails to evaluate. now is the time the helpers use.
func (e *Engine) Apply(alert *models.Alert, now time.Time) error {
	_, err := e.Evaluate(alert, now)
	return err
}

// Evaluate is Apply that also reports which profiles matched, in order, for
// the notification plugins. On error the alert is left as it was.
func (e *Engine) Evaluate(alert *models.Alert, now time.Time) ([]Match, error) {
	ev := env{Alert: alert, store: e.store, now: now, logger: e.logger}
	if len(alert.Decisions) != 0 {
		return e.notifyOnly(alert, ev), nil
	}

	orig := alert.Decisions
	var matches []Match
	for i, p := range e.profiles {
		decisions, matched, err := e.evaluate(p, ev)
		forceBreak := false
		if err != nil {
			// Note: on error, matched keeps whatever the filters run
			// before the failing one said (the reference behaves so);
			// decisions are always dropped.
			switch p.OnError {
			case ActionApply:
				e.logger.Warn("profile evaluation failed, applying it anyway", "profile", p.Name, "error", err)
				matched = true
			case ActionContinue, ActionIgnore:
				e.logger.Warn("profile evaluation failed, skipping it", "profile", p.Name, "error", err)
			case ActionBreak:
				// Quirk kept from the reference: the break only happens
				// if the profile matched before the error, so a failed
				// profile usually falls through like "continue".
				e.logger.Warn("profile evaluation failed", "profile", p.Name, "error", err)
				forceBreak = true
			default:
				alert.Decisions = orig
				return nil, err
			}
		}
		if !matched {
			continue
		}
		for _, d := range decisions {
			d.UUID = uuid.NewString()
		}
		// Only the first matching profile that yields decisions sets them;
		// later matches only notify.
		if len(alert.Decisions) == 0 {
			alert.Decisions = append(alert.Decisions, decisions...)
		}
		matches = append(matches, Match{Index: i, Profile: p, Alert: *alert})
		if p.OnSuccess == ActionBreak || forceBreak {
			break
		}
	}
	return matches, nil
}

// notifyOnly evaluates the profiles for an alert that already carries
// decisions (cscli, import, PAPI): errors skip the profile, nothing changes.
func (e *Engine) notifyOnly(alert *models.Alert, ev env) []Match {
	var matches []Match
	for i, p := range e.profiles {
		_, matched, err := e.evaluate(p, ev)
		if err != nil {
			e.logger.Warn("profile evaluation failed", "profile", p.Name, "error", err)
			continue
		}
		if !matched {
			continue
		}
		matches = append(matches, Match{Index: i, Profile: p, Alert: *alert})
		if p.OnSuccess == ActionBreak {
			break
		}
	}
	return matches
}

// evaluate runs every filter of p (no short-circuit). Each filter that is true
// appends the full decision list again: two true filters give duplicated
// decisions (quirk kept from the reference). matched reports whether any
// filter run so far was true, also when an error stops the evaluation.
func (e *Engine) evaluate(p *Profile, ev env) (decisions []*models.Decision, matched bool, err error) {
	for i, prog := range p.filters {
		out, err := expr.Run(prog, ev)
		if err != nil {
			return nil, matched, fmt.Errorf("while running expression %s: %w", p.Filters[i], oneLineExprError(err))
		}
		ok, isBool := out.(bool)
		if !isBool {
			return nil, matched, fmt.Errorf("unexpected type %T (%v) while running '%s'", out, out, p.Filters[i])
		}
		if p.Debug {
			e.logger.Info("profile filter evaluated", "profile", p.Name, "filter", p.Filters[i], "result", ok)
		}
		if ok {
			matched = true
			decisions = append(decisions, e.generate(p, ev)...)
		}
	}
	return decisions, matched, nil
}

// generate builds one decision per template of p for the alert in ev.
func (e *Engine) generate(p *Profile, ev env) []*models.Decision {
	alert := ev.Alert
	out := make([]*models.Decision, 0, len(p.Decisions))
	for _, t := range p.Decisions {
		d := &models.Decision{
			Type:     models.Str(t.Type),
			Value:    models.Str(alert.GetValue()),
			Scenario: models.Str(alert.GetScenario()),
			Duration: models.Str(t.Duration),
			Origin:   models.Str(OriginCrowdsec),
		}
		// The template scope wins and is used as written (not normalised:
		// quirk kept from the reference).
		if t.Scope != "" {
			d.Scope = models.Str(t.Scope)
		} else {
			d.Scope = models.Str(alert.GetScope())
		}
		if t.HasOrigin {
			d.Origin = models.Str(OriginCrowdsec + "/" + t.Origin)
		}
		if t.Simulated || (alert.Simulated != nil && *alert.Simulated) {
			d.Simulated = models.Bool(true)
		}
		if p.durationExpr != nil {
			if dur, ok := e.runDurationExpr(p, ev); ok {
				d.Duration = models.Str(dur)
			}
		}
		out = append(out, d)
	}
	return out
}

// runDurationExpr evaluates p's duration_expr; the result, formatted with %v,
// is used when it parses as a duration. Failures only log a warning.
func (e *Engine) runDurationExpr(p *Profile, ev env) (string, bool) {
	out, err := expr.Run(p.durationExpr, ev)
	if err != nil {
		e.logger.Warn("duration_expr failed, keeping the template duration", "profile", p.Name, "error", oneLineExprError(err))
		return "", false
	}
	s := fmt.Sprint(out)
	if _, err := models.ParseDuration(s); err != nil {
		e.logger.Warn("duration_expr result is not a duration, keeping the template duration", "profile", p.Name, "result", s)
		return "", false
	}
	if p.Debug {
		e.logger.Info("profile duration_expr evaluated", "profile", p.Name, "result", s)
	}
	return s, true
}
