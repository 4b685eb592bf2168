package models

import (
	"fmt"
	"log/slog"
)

// String describes the source as the reference does in its log lines
// ("ip 1.2.3.4 (FR/16276)", "range 1.2.3.0/24", "<scope> <value>",
// "empty source").
func (s *Source) String() string {
	if s == nil || s.Scope == nil || *s.Scope == "" {
		return "empty source"
	}
	value := ""
	if s.Value != nil {
		value = *s.Value
	}
	cn := s.Cn
	if s.AsNumber != "" {
		cn += "/" + s.AsNumber
	}
	if cn != "" {
		cn = " (" + cn + ")"
	}
	switch *s.Scope {
	case ScopeIP:
		return "ip " + value + cn
	case ScopeRange:
		return "range " + value + cn
	}
	return *s.Scope + " " + value
}

// FormatAsStrings gives the reference's one-line summaries of an alert: one
// line "(machine) alert : <scenario> by <source>" without decisions (or for
// a cscli import), else one line per decision "(machine/origin) <scenario>
// [for i/n decisions] by <source> : [(simulated ...)]<duration> <type> on
// <scope> <value>". The logger is accepted for signature compatibility with
// profile expressions (which can only pass nil) and not used. Unlike the
// reference, a decision with a missing field prints it empty instead of
// failing.
func (a *Alert) FormatAsStrings(machineID string, _ *slog.Logger) []string {
	src := a.Source.String()
	msg := "empty scenario"
	switch {
	case a.Scenario != nil && *a.Scenario != "":
		msg = *a.Scenario
	case a.Message != nil && *a.Message != "":
		msg = *a.Message
	}
	reason := msg + " by " + src
	if len(a.Decisions) == 0 || deref(a.Decisions[0].Origin) == OriginCscliImport {
		return []string{fmt.Sprintf("(%s) alert : %s", machineID, reason)}
	}
	out := make([]string, 0, len(a.Decisions))
	for i, d := range a.Decisions {
		prefix := ""
		switch {
		case a.Simulated != nil && *a.Simulated:
			prefix = "(simulated alert)"
		case d.Simulated != nil && *d.Simulated:
			prefix = "(simulated decision)"
		}
		if len(a.Decisions) > 1 {
			// the reference's quirk: the source is dropped here
			reason = fmt.Sprintf("%s for %d/%d decisions", msg, i+1, len(a.Decisions))
		}
		origin := deref(d.Origin)
		if machineID != "" {
			origin = machineID + "/" + origin
		}
		out = append(out, fmt.Sprintf("(%s) %s : %s%s %s on %s %s", origin, reason, prefix,
			deref(d.Duration), deref(d.Type), deref(d.Scope), deref(d.Value)))
	}
	return out
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
