package capi

import "time"

// Wire shapes of the CAPI calls (spec §4–§6).

// Signal is one AddSignalsRequestItem.
type Signal struct {
	UUID            string           `json:"uuid,omitempty"`
	MachineID       string           `json:"machine_id,omitempty"`
	CreatedAt       string           `json:"created_at,omitempty"`
	Scenario        string           `json:"scenario"`
	ScenarioHash    string           `json:"scenario_hash"`
	ScenarioVersion string           `json:"scenario_version"`
	ScenarioTrust   string           `json:"scenario_trust,omitempty"`
	Message         string           `json:"message"`
	StartAt         string           `json:"start_at"`
	StopAt          string           `json:"stop_at"`
	Source          SignalSource     `json:"source"`
	Decisions       []SignalDecision `json:"decisions,omitempty"`
	// Context is JSON null unless share_context is on.
	Context []SignalContext `json:"context"`
}

// SignalSource is the signal's source.
type SignalSource struct {
	Scope     string  `json:"scope"`
	Value     string  `json:"value"`
	IP        string  `json:"ip,omitempty"`
	Range     string  `json:"range,omitempty"`
	AsNumber  string  `json:"as_number,omitempty"`
	AsName    string  `json:"as_name,omitempty"`
	Cn        string  `json:"cn,omitempty"`
	Latitude  float32 `json:"latitude,omitempty"`
	Longitude float32 `json:"longitude,omitempty"`
}

// SignalDecision is one decision of a signal; ID is always 0.
type SignalDecision struct {
	Duration  string `json:"duration"`
	ID        int64  `json:"id"`
	Origin    string `json:"origin"`
	Scenario  string `json:"scenario"`
	Scope     string `json:"scope"`
	Type      string `json:"type"`
	Value     string `json:"value"`
	UUID      string `json:"uuid,omitempty"`
	Simulated bool   `json:"simulated,omitempty"`
	Until     string `json:"until,omitempty"`
}

// SignalContext is one key/value of the alert meta.
type SignalContext struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// StreamResponse is GetDecisionsStreamResponse.
type StreamResponse struct {
	New     []StreamNewGroup     `json:"new"`
	Deleted []StreamDeletedGroup `json:"deleted"`
	Links   *StreamLinks         `json:"links"`
}

// StreamNewGroup is a scenario's new decisions.
type StreamNewGroup struct {
	Scenario  string           `json:"scenario"`
	Scope     string           `json:"scope"`
	Decisions []StreamDecision `json:"decisions"`
}

// StreamDecision is one community decision.
type StreamDecision struct {
	Value    string `json:"value"`
	Duration string `json:"duration"`
}

// StreamDeletedGroup lists deleted values of a scope.
type StreamDeletedGroup struct {
	Scope     string   `json:"scope"`
	Decisions []string `json:"decisions"`
}

// StreamLinks are the blocklist and allowlist links.
type StreamLinks struct {
	Blocklists []BlocklistLink `json:"blocklists"`
	Allowlists []AllowlistLink `json:"allowlists"`
}

// BlocklistLink is a subscribed blocklist.
type BlocklistLink struct {
	Name        string `json:"name"`
	URL         string `json:"url"`
	Remediation string `json:"remediation"`
	Scope       string `json:"scope"`
	Duration    string `json:"duration"`
}

// AllowlistLink is a console allowlist.
type AllowlistLink struct {
	Name        string     `json:"name"`
	Description string     `json:"description"`
	URL         string     `json:"url"`
	ID          string     `json:"id"`
	CreatedAt   *time.Time `json:"created_at,omitempty"`
	UpdatedAt   *time.Time `json:"updated_at,omitempty"`
}

// AllowlistItem is one NDJSON line of an allowlist download.
type AllowlistItem struct {
	Value       string     `json:"value"`
	Description string     `json:"description"`
	Expiration  *time.Time `json:"expiration,omitempty"`
	CreatedAt   *time.Time `json:"created_at,omitempty"`
}

// MetricsPayload is POST v3/metrics/.
type MetricsPayload struct {
	ApilVersion string           `json:"apil_version"`
	Machines    []MetricsMachine `json:"machines"`
	Bouncers    []MetricsBouncer `json:"bouncers"`
}

// MetricsMachine describes an agent.
type MetricsMachine struct {
	Name       string `json:"name,omitempty"`
	Version    string `json:"version,omitempty"`
	LastUpdate string `json:"last_update,omitempty"`
	LastPush   string `json:"last_push,omitempty"`
}

// MetricsBouncer describes a bouncer.
type MetricsBouncer struct {
	CustomName string `json:"custom_name,omitempty"`
	Name       string `json:"name,omitempty"`
	Version    string `json:"version,omitempty"`
	LastPull   string `json:"last_pull,omitempty"`
}

// UsageMetricsPayload is POST v3/usage-metrics (AllMetrics).
type UsageMetricsPayload struct {
	RemediationComponents []UsageComponent `json:"remediation_components"`
	LogProcessors         []UsageComponent `json:"log_processors"`
	Lapi                  *UsageComponent  `json:"lapi,omitempty"`
}

// UsageOS is OSversion.
type UsageOS struct {
	Name    string `json:"name"`
	Family  string `json:"family,omitempty"`
	Version string `json:"version"`
}

// UsageDetailed is DetailedMetrics.
type UsageDetailed struct {
	Meta  UsageMeta `json:"meta"`
	Items []any     `json:"items"`
}

// UsageMeta is MetricsMeta.
type UsageMeta struct {
	UtcNowTimestamp   int64 `json:"utc_now_timestamp"`
	WindowSizeSeconds int64 `json:"window_size_seconds"`
}

// UsageComponent is one BaseMetrics-derived entry (remediation component,
// log processor or the LAPI itself); fields that do not apply are omitted.
type UsageComponent struct {
	Name                string   `json:"name,omitempty"`
	Type                string   `json:"type,omitempty"`
	Version             string   `json:"version"`
	OS                  *UsageOS `json:"os,omitempty"`
	FeatureFlags        []string `json:"feature_flags"`
	UtcStartupTimestamp int64    `json:"utc_startup_timestamp"`
	Metrics             []any    `json:"metrics"` // UsageDetailed, or stored JSON
	LastPull            int64    `json:"last_pull,omitempty"`
	LastPush            int64    `json:"last_push,omitempty"`
	LastUpdate          int64    `json:"last_update,omitempty"`
	Datasources         any      `json:"datasources,omitempty"` // required for log processors
	HubItems            any      `json:"hub_items,omitempty"`   // required for log processors
	ConsoleOptions      []string `json:"console_options,omitempty"`
}
