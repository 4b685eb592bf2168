// Package models holds the JSON shapes of the CrowdSec LAPI wire contract
// (../shared/spec/lapi.md §6). Pointer fields mirror the reference so that
// "required" means "present and not null" and so that profile expressions
// (Alert.Scenario == "x") see the same field names as in CrowdSec.
package models

import (
	"fmt"
	"strings"
)

// Scope names as normalised by the LAPI.
const (
	ScopeIP      = "Ip"
	ScopeRange   = "Range"
	ScopeAS      = "AS"
	ScopeCountry = "Country"

	OriginCscliImport = "cscli-import"
)

// NormalizeScope maps the case-insensitive well-known scopes to their
// canonical spelling and leaves every other scope unchanged.
func NormalizeScope(s string) string {
	switch strings.ToLower(s) {
	case "ip":
		return ScopeIP
	case "range":
		return ScopeRange
	case "as":
		return ScopeAS
	case "country":
		return ScopeCountry
	}
	return s
}

// MetaItem is one key/value pair of alert or event metadata.
type MetaItem struct {
	Key   string `json:"key,omitempty"`
	Value string `json:"value,omitempty"`
}

// Meta is a list of metadata pairs.
type Meta []*MetaItem

// Source is where an alert comes from.
type Source struct {
	AsName    string  `json:"as_name,omitempty"`
	AsNumber  string  `json:"as_number,omitempty"`
	Cn        string  `json:"cn,omitempty"`
	IP        string  `json:"ip,omitempty"`
	Latitude  float32 `json:"latitude,omitempty"`
	Longitude float32 `json:"longitude,omitempty"`
	Range     string  `json:"range,omitempty"`
	Scope     *string `json:"scope"`
	Value     *string `json:"value"`
}

// GetValue returns the source value or "".
func (s Source) GetValue() string {
	if s.Value == nil {
		return ""
	}
	return *s.Value
}

// GetScope returns the source scope or "".
func (s Source) GetScope() string {
	if s.Scope == nil {
		return ""
	}
	return *s.Scope
}

// GetAsNumberName returns "<as_number> <as_name>", the number omitted when "0".
func (s Source) GetAsNumberName() string {
	ret := ""
	if s.AsNumber != "0" {
		ret += s.AsNumber
	}
	if s.AsName != "" {
		ret += " " + s.AsName
	}
	return ret
}

// Event is one event of an alert.
type Event struct {
	Meta      Meta    `json:"meta"`
	Timestamp *string `json:"timestamp"`
}

// GetMeta returns the first value of key in the event's meta, or "".
func (e *Event) GetMeta(key string) string {
	for _, m := range e.Meta {
		if m != nil && m.Key == key {
			return m.Value
		}
	}
	return ""
}

// Decision is a remediation (ban, captcha, ...) on a scope/value.
type Decision struct {
	Duration  *string `json:"duration"`
	ID        int64   `json:"id,omitempty"`
	Origin    *string `json:"origin"`
	Scenario  *string `json:"scenario"`
	Scope     *string `json:"scope"`
	Simulated *bool   `json:"simulated,omitempty"`
	Type      *string `json:"type"`
	Until     string  `json:"until,omitempty"`
	UUID      string  `json:"uuid,omitempty"`
	Value     *string `json:"value"`
}

// Alert is what agents push and what GET /v1/alerts returns.
type Alert struct {
	Capacity        *int32      `json:"capacity"`
	CreatedAt       string      `json:"created_at,omitempty"`
	Decisions       []*Decision `json:"decisions"`
	Events          []*Event    `json:"events"`
	EventsCount     *int32      `json:"events_count"`
	ID              int64       `json:"id,omitempty"`
	Labels          []string    `json:"labels"`
	Leakspeed       *string     `json:"leakspeed"`
	MachineID       string      `json:"machine_id,omitempty"`
	Message         *string     `json:"message"`
	Meta            Meta        `json:"meta,omitempty"`
	Remediation     bool        `json:"remediation,omitempty"`
	Scenario        *string     `json:"scenario"`
	ScenarioHash    *string     `json:"scenario_hash"`
	ScenarioVersion *string     `json:"scenario_version"`
	Simulated       *bool       `json:"simulated"`
	Source          *Source     `json:"source"`
	StartAt         *string     `json:"start_at"`
	StopAt          *string     `json:"stop_at"`
	UUID            string      `json:"uuid,omitempty"`
}

// GetScope returns the source scope or "".
func (a *Alert) GetScope() string {
	if a.Source == nil {
		return ""
	}
	return a.Source.GetScope()
}

// GetValue returns the source value or "".
func (a *Alert) GetValue() string {
	if a.Source == nil {
		return ""
	}
	return a.Source.GetValue()
}

// GetScenario returns the scenario or "".
func (a *Alert) GetScenario() string {
	if a.Scenario == nil {
		return ""
	}
	return *a.Scenario
}

// GetEventsCount returns events_count or 0.
func (a *Alert) GetEventsCount() int32 {
	if a.EventsCount == nil {
		return 0
	}
	return *a.EventsCount
}

// GetMeta returns the first alert-meta value for key, or "".
func (a *Alert) GetMeta(key string) string {
	for _, m := range a.Meta {
		if m != nil && m.Key == key {
			return m.Value
		}
	}
	return ""
}

// Validate checks the fields the reference marks as required (present and
// not null). Errors are reported with the index-prefixed paths of the
// reference ("0.scenario in body is required").
func ValidateAlerts(alerts []*Alert) error {
	var errs []string
	req := func(ok bool, idx int, path string) {
		if !ok {
			errs = append(errs, fmt.Sprintf("%d.%s in body is required", idx, path))
		}
	}
	for i, a := range alerts {
		if a == nil {
			errs = append(errs, fmt.Sprintf("%d in body is required", i))
			continue
		}
		req(a.Scenario != nil, i, "scenario")
		req(a.ScenarioHash != nil, i, "scenario_hash")
		req(a.ScenarioVersion != nil, i, "scenario_version")
		req(a.Message != nil, i, "message")
		req(a.EventsCount != nil, i, "events_count")
		req(a.StartAt != nil, i, "start_at")
		req(a.StopAt != nil, i, "stop_at")
		req(a.Capacity != nil, i, "capacity")
		req(a.Leakspeed != nil, i, "leakspeed")
		req(a.Simulated != nil, i, "simulated")
		req(a.Events != nil, i, "events")
		req(a.Source != nil, i, "source")
		if a.Source != nil {
			req(a.Source.Scope != nil, i, "source.scope")
			req(a.Source.Value != nil, i, "source.value")
		}
		for j, e := range a.Events {
			if e == nil {
				continue
			}
			req(e.Timestamp != nil, i, fmt.Sprintf("events.%d.timestamp", j))
			req(e.Meta != nil, i, fmt.Sprintf("events.%d.meta", j))
		}
		for j, d := range a.Decisions {
			if d == nil {
				continue
			}
			p := fmt.Sprintf("decisions.%d.", j)
			req(d.Duration != nil, i, p+"duration")
			req(d.Origin != nil, i, p+"origin")
			req(d.Scenario != nil, i, p+"scenario")
			req(d.Scope != nil, i, p+"scope")
			req(d.Type != nil, i, p+"type")
			req(d.Value != nil, i, p+"value")
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("validation failure list:\n%s", strings.Join(errs, "\n"))
}

// Str returns a pointer to s (for building alerts in code and tests).
func Str(s string) *string { return &s }

// Int32 returns a pointer to i.
func Int32(i int32) *int32 { return &i }

// Bool returns a pointer to b.
func Bool(b bool) *bool { return &b }
