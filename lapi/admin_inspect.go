package lapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/fsm"
)

// UsageView is one usage-metrics payload a component sent.
type UsageView struct {
	ReceivedAt time.Time       `json:"received_at"`
	Sent       bool            `json:"sent_to_capi"`
	Metrics    json.RawMessage `json:"metrics"`
}

// MachineInspect is `machines inspect`: the machine, what its agent
// reported (hub items, datasources) and its usage metrics.
type MachineInspect struct {
	MachineView
	HubItems    json.RawMessage `json:"hub_items,omitempty"`
	Datasources json.RawMessage `json:"datasources,omitempty"`
	Usage       []UsageView     `json:"usage_metrics"`
}

// BouncerInspect is `bouncers inspect`.
type BouncerInspect struct {
	BouncerView
	UpdatedAt    time.Time   `json:"updated_at"`
	FeatureFlags string      `json:"featureflags,omitempty"`
	Usage        []UsageView `json:"usage_metrics"`
}

func usageViews(rs []fsm.UsageRecord) []UsageView {
	out := make([]UsageView, 0, len(rs))
	for _, r := range rs {
		out = append(out, UsageView{ReceivedAt: time.Unix(0, r.ReceivedAt).UTC(), Sent: r.Sent, Metrics: r.Metrics})
	}
	return out
}

func (s *Server) adminInspectMachine(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	m := s.fsm.Machine(id)
	if m == nil {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("machine '%s' not found", id))
		return
	}
	v := MachineInspect{MachineView: MachineView{ID: m.ID, IP: m.IP, Validated: m.Validated, AuthType: m.AuthType,
		Version: m.Version, Scenarios: m.Scenarios, CreatedAt: time.Unix(0, m.CreatedAt).UTC(),
		UpdatedAt: time.Unix(0, m.UpdatedAt).UTC(), LastPush: tsPtr(m.LastPush),
		LastHeartbeat: tsPtr(m.LastHeartbeat), OS: strings.Trim(m.OSName+"/"+m.OSVersion, "/"),
		FeatureFlags: m.FeatureFlags}, Usage: usageViews(m.Usage)}
	if json.Valid(m.HubState) {
		v.HubItems = m.HubState
	}
	if json.Valid(m.Datasources) {
		v.Datasources = m.Datasources
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) adminInspectBouncer(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	b := s.fsm.Bouncer(name)
	if b == nil {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("bouncer '%s' not found", name))
		return
	}
	lp := s.touches.cursor(b).LastPull
	v := BouncerInspect{BouncerView: BouncerView{Name: b.Name, IP: b.IP, Revoked: b.Revoked, LastPull: tsPtr(lp),
		Type: b.Type, Version: b.Version, AuthType: b.AuthType, AutoCreated: b.AutoCreated,
		CreatedAt: time.Unix(0, b.CreatedAt).UTC(), OS: strings.Trim(b.OSName+"/"+b.OSVersion, "/")},
		UpdatedAt: time.Unix(0, b.UpdatedAt).UTC(), FeatureFlags: b.FeatureFlags, Usage: usageViews(b.Usage)}
	writeJSON(w, http.StatusOK, v)
}
