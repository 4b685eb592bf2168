package lapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/halapi/halapi/fsm"
)

type umOS struct {
	Name    *string `json:"name"`
	Family  string  `json:"family"`
	Version *string `json:"version"`
}

type umItem struct {
	Name   *string           `json:"name"`
	Value  *float64          `json:"value"`
	Unit   *string           `json:"unit"`
	Labels map[string]string `json:"labels,omitempty"`
}

type umDetailed struct {
	Meta  *json.RawMessage `json:"meta"`
	Items []*umItem        `json:"items"`
}

type umBase struct {
	Version             *string         `json:"version"`
	OS                  *umOS           `json:"os"`
	Metrics             []*umDetailed   `json:"metrics"`
	FeatureFlags        []string        `json:"feature_flags"`
	UtcStartupTimestamp *int64          `json:"utc_startup_timestamp"`
	Type                string          `json:"type"`
	Name                string          `json:"name"`
	HubItems            json.RawMessage `json:"hub_items"`
	Datasources         json.RawMessage `json:"datasources"`
}

type allMetrics struct {
	RemediationComponents []*umBase `json:"remediation_components"`
	LogProcessors         []*umBase `json:"log_processors"`
}

func validateBase(prefix string, b *umBase, lp bool) []string {
	var errs []string
	req := func(ok bool, f string) {
		if !ok {
			errs = append(errs, prefix+f+" in body is required")
		}
	}
	req(b.Version != nil, "version")
	req(b.UtcStartupTimestamp != nil, "utc_startup_timestamp")
	if b.OS != nil {
		req(b.OS.Name != nil, "os.name")
		req(b.OS.Version != nil, "os.version")
	}
	if lp {
		req(len(b.HubItems) > 0 && string(b.HubItems) != "null", "hub_items")
		req(len(b.Datasources) > 0 && string(b.Datasources) != "null", "datasources")
	}
	for i, m := range b.Metrics {
		if m == nil {
			continue
		}
		p := fmt.Sprintf("metrics.%d.", i)
		req(m.Meta != nil, p+"meta")
		req(m.Items != nil, p+"items")
		for j, it := range m.Items {
			if it == nil {
				continue
			}
			q := fmt.Sprintf("%sitems.%d.", p, j)
			req(it.Name != nil, q+"name")
			req(it.Value != nil, q+"value")
			req(it.Unit != nil, q+"unit")
		}
	}
	return errs
}

func (s *Server) usageMetrics(w http.ResponseWriter, r *http.Request) {
	var in allMetrics
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	var errs []string
	for i, b := range in.RemediationComponents {
		if b != nil {
			errs = append(errs, validateBase(fmt.Sprintf("remediation_components.%d.", i), b, false)...)
		}
	}
	for i, b := range in.LogProcessors {
		if b != nil {
			errs = append(errs, validateBase(fmt.Sprintf("log_processors.%d.", i), b, true)...)
		}
	}
	if len(errs) > 0 {
		writeErr(w, http.StatusUnprocessableEntity, strings.Join(errs, "\n"))
		return
	}
	osFields := func(b *umBase) (string, string) {
		if b.OS == nil {
			return "", ""
		}
		return *b.OS.Name, *b.OS.Version
	}
	if b := bouncerOf(r); b != nil {
		switch len(in.RemediationComponents) {
		case 0:
			writeErr(w, http.StatusBadRequest, "Missing remediation component data")
			return
		case 1:
		default:
			writeErr(w, http.StatusBadRequest, "Payload has more than one remediation component")
			return
		}
		rc := in.RemediationComponents[0]
		name, ver := osFields(rc)
		ff := strings.Join(rc.FeatureFlags, ",")
		upd := fsm.BouncerUpdate{Name: b.Name, OSName: &name, OSVersion: &ver, FeatureFlags: &ff, Version: rc.Version}
		detail, ok := usageDetail(w, rc)
		if !ok {
			return
		}
		if _, err := s.apply(r.Context(), fsm.CmdBouncerUpdate, upd); err != nil {
			s.writeApplyErr(w, err)
			return
		}
		s.storeUsage(r, fsm.UsageRemediation, b.Name, detail)
		w.WriteHeader(http.StatusCreated)
		return
	}
	switch len(in.LogProcessors) {
	case 0:
		writeErr(w, http.StatusBadRequest, "Missing log processor data")
		return
	case 1:
	default:
		writeErr(w, http.StatusBadRequest, "Payload has more than one log processor")
		return
	}
	lp := in.LogProcessors[0]
	name, ver := osFields(lp)
	ff := strings.Join(lp.FeatureFlags, ",")
	id := machineID(r)
	if s.fsm.Machine(id) == nil {
		w.WriteHeader(http.StatusCreated)
		return
	}
	upd := fsm.MachineUpdate{ID: id, OSName: &name, OSVersion: &ver, FeatureFlags: &ff, Version: lp.Version,
		HubState: lp.HubItems, Datasources: lp.Datasources}
	detail, ok := usageDetail(w, lp)
	if !ok {
		return
	}
	if _, err := s.apply(r.Context(), fsm.CmdMachineUpdate, upd); err != nil {
		s.writeApplyErr(w, err)
		return
	}
	s.storeUsage(r, fsm.UsageLogProcessor, id, detail)
	w.WriteHeader(http.StatusCreated)
}

// usageDetail is the "metrics" list of a component's payload as stored
// (CrowdSec stores it to forward it to the Central API). A list over
// fsm.MaxUsageBytes is refused (413) before anything is written.
func usageDetail(w http.ResponseWriter, b *umBase) (json.RawMessage, bool) {
	ms := make([]*umDetailed, 0, len(b.Metrics))
	for _, m := range b.Metrics {
		if m != nil {
			ms = append(ms, m)
		}
	}
	raw, err := json.Marshal(ms)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	if len(raw) > fsm.MaxUsageBytes {
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("usage metrics list longer than %d bytes", fsm.MaxUsageBytes))
		return nil, false
	}
	return raw, true
}

// storeUsage keeps a payload's metrics list for the Central API and for
// inspect. The base information is already written: a failure here (a
// cluster still being upgraded refuses the command type) is logged, and
// the component gets its 201 as before.
func (s *Server) storeUsage(r *http.Request, kind, name string, detail json.RawMessage) {
	if _, err := s.apply(r.Context(), fsm.CmdUsageAdd, fsm.UsageAdd{Kind: kind, Name: name, Metrics: detail}); err != nil {
		s.log.Warn("usage metrics not stored", "component", kind, "name", name, "err", err)
	}
}
