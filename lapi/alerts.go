package lapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
)

// alertsPerCommand bounds one raft entry; a bigger push becomes several
// entries (CrowdSec inserts in batches of 50 too).
const alertsPerCommand = 500

func (s *Server) postAlerts(w http.ResponseWriter, r *http.Request) {
	key, err := idemKey(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	var in []*models.Alert
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := models.ValidateAlerts(in); err != nil {
		// CrowdSec answers schema errors with 500; clients only log it.
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	now := s.now()
	mid := machineID(r)
	batch := make([]fsm.NewAlert, 0, len(in))
	engine := s.Profiles().Engine // one set for the whole request
	for _, a := range in {
		a.Source.Scope = models.Str(models.NormalizeScope(a.Source.GetScope()))
		for _, d := range a.Decisions {
			if d != nil && d.Scope != nil {
				*d.Scope = models.NormalizeScope(*d.Scope)
			}
		}
		if len(a.Decisions) == 0 && (a.GetScope() == models.ScopeIP || a.GetScope() == models.ScopeRange) && a.GetValue() != "" {
			if reasons, err := s.fsm.AllowlistCheck(a.GetValue(), now); err == nil && len(reasons) > 0 {
				s.log.Info("alert dropped: source is allowlisted", "value", a.GetValue(), "reason", strings.Join(reasons, ", "))
				continue
			}
		}
		a.MachineID = mid
		a.UUID = uuid.NewString()
		for _, d := range a.Decisions {
			if d != nil {
				d.UUID = uuid.NewString()
			}
		}
		matches, err := engine.Evaluate(a, now)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		na, keep, err := toStored(a, now)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		na.Alert.Notify = notifyList(matches)
		if keep {
			batch = append(batch, na)
		}
	}
	ids := make([]string, 0, len(batch))
	for part := 0; len(batch) > 0; part++ {
		n := min(len(batch), alertsPerCommand)
		res, err := s.applyKeyed(r.Context(), commandID(r, key, "alerts", part), fsm.CmdAlertsCreate, fsm.AlertsCreate{MachineID: mid, Alerts: batch[:n]})
		if err != nil {
			s.writeApplyErr(w, err)
			return
		}
		for _, id := range res.IDs {
			ids = append(ids, strconv.FormatInt(id, 10))
		}
		batch = batch[n:]
	}
	s.metrics.alertsReceived(mid, len(ids))
	writeJSON(w, http.StatusCreated, ids)
}

func parseTime(s *string, now time.Time) int64 {
	if s != nil {
		if t, err := time.Parse(time.RFC3339Nano, *s); err == nil {
			return fsm.UnixNano(t) // year 9999 saturates, never wraps
		}
	}
	return now.UnixNano()
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

const (
	maxMetaKey   = 255
	maxMetaValue = 4095
	maxEventMeta = 8191
)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// toStored converts a validated wire alert to the stored form. keep is
// false when every decision of the alert had to be discarded.
func toStored(a *models.Alert, now time.Time) (fsm.NewAlert, bool, error) {
	st := fsm.Alert{
		UUID: a.UUID, Scenario: deref(a.Scenario), ScenarioHash: deref(a.ScenarioHash),
		ScenarioVersion: deref(a.ScenarioVersion), Message: deref(a.Message), Leakspeed: deref(a.Leakspeed),
		EventsCount: a.GetEventsCount(), StartAt: parseTime(a.StartAt, now), StopAt: parseTime(a.StopAt, now),
		Remediation: a.Remediation,
	}
	if a.Capacity != nil {
		st.Capacity = *a.Capacity
	}
	if a.Simulated != nil {
		st.Simulated = *a.Simulated
	}
	src := a.Source
	st.Source = fsm.Source{Scope: src.GetScope(), Value: src.GetValue(), IP: src.IP, Range: src.Range,
		AsNumber: src.AsNumber, AsName: src.AsName, Cn: src.Cn, Latitude: src.Latitude, Longitude: src.Longitude}
	for _, m := range a.Meta {
		if m != nil {
			st.Meta = append(st.Meta, fsm.KV{Key: truncate(m.Key, maxMetaKey), Value: truncate(m.Value, maxMetaValue)})
		}
	}
	for _, e := range a.Events {
		if e == nil {
			continue
		}
		ev := fsm.Event{Timestamp: parseTime(e.Timestamp, now)}
		for _, m := range e.Meta {
			if m != nil {
				ev.Meta = append(ev.Meta, fsm.KV{Key: m.Key, Value: m.Value})
			}
		}
		ev.Meta = boundEventMeta(ev.Meta)
		st.Events = append(st.Events, ev)
	}
	na := fsm.NewAlert{Alert: st}
	for _, d := range a.Decisions {
		if d == nil {
			continue
		}
		dur, err := models.ParseDuration(deref(d.Duration))
		if err != nil {
			return na, false, fmt.Errorf("decision duration '%s': %w: unable to parse duration", deref(d.Duration), err)
		}
		sd := fsm.Decision{UUID: fsm.MustUUID(d.UUID), Origin: deref(d.Origin), Type: deref(d.Type), Scope: deref(d.Scope),
			Value: deref(d.Value), Scenario: deref(d.Scenario),
			Until: fsm.ClampUntil(now.UnixNano(), fsm.AddClamped(st.StopAt, int64(dur)))}
		if fsm.IsIPScope(sd.Scope) {
			if _, err := fsm.ParseRange(sd.Value); err != nil {
				continue // CrowdSec discards such decisions
			}
		}
		na.Decisions = append(na.Decisions, sd)
	}
	if len(a.Decisions) > 0 && len(na.Decisions) == 0 {
		return na, false, nil
	}
	return na, true, nil
}

// boundEventMeta keeps one event's serialized meta under 8191 bytes by
// halving long values (then dropping the meta if it is still too long).
func boundEventMeta(meta []fsm.KV) []fsm.KV {
	size := func() int {
		b, _ := json.Marshal(meta)
		return len(b)
	}
	for n := 2048; n >= 1 && size() > maxEventMeta; n /= 2 {
		for i := range meta {
			if len(meta[i].Value) > 2*n {
				meta[i].Value = meta[i].Value[:n] + "<stripped>"
			}
		}
	}
	if size() > maxEventMeta {
		return nil
	}
	return meta
}

// alertFilter parses GET/DELETE /v1/alerts parameters (lapi.md §4.7).
func alertFilter(q url.Values, now time.Time) (*fsm.AlertFilter, bool, error) {
	f := &fsm.AlertFilter{Contains: true, Limit: 100}
	withDecisions := true
	dur := func(v string) (int64, error) {
		d, err := models.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("while parsing duration: %w", err)
		}
		return now.Add(-d).UnixNano(), nil
	}
	for k, vs := range q {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		var err error
		switch k {
		case "scope":
			f.Scope = models.NormalizeScope(v)
			if !strings.EqualFold(v, "ip") && !strings.EqualFold(v, "range") {
				f.Scope = v
			}
		case "value":
			f.Value = v
		case "scenario":
			f.Scenario = v
		case "ip", "range":
			r, perr := fsm.ParseRange(v)
			if perr != nil {
				return nil, false, fmt.Errorf("invalid ip address '%s'", v)
			}
			f.IP = &r
		case "contains":
			b, perr := strconv.ParseBool(v)
			if perr != nil {
				return nil, false, fmt.Errorf("invalid contains value : %s", perr)
			}
			f.Contains = b
		case "since":
			f.Since, err = dur(v)
		case "until":
			f.Until, err = dur(v)
		case "created_before":
			f.CreatedBefore, err = dur(v)
		case "decision_type":
			f.DecisionType = v
		case "origin":
			f.Origin = v
		case "include_capi":
			if v == "false" {
				f.ExcludeCAPI = true
			}
		case "has_active_decision":
			b, perr := strconv.ParseBool(v)
			if perr != nil {
				return nil, false, fmt.Errorf("'%s' is not a boolean: %s: unable to parse type", v, perr)
			}
			f.HasActiveDecision = &b
		case "simulated":
			f.ExcludeSimulated = v == "false"
		case "limit":
			n, perr := strconv.Atoi(v)
			if perr != nil {
				return nil, false, fmt.Errorf("bad limit in parameters: %s", perr)
			}
			f.Limit = n
		case "sort":
			if v == "ASC" {
				f.Asc = true
			}
		case "with_decisions":
			withDecisions = v != "false"
		default:
			return nil, false, fmt.Errorf("filter parameter '%s' is unknown (=%s): invalid filter", k, v)
		}
		if err != nil {
			return nil, false, err
		}
	}
	if f.Origin != "" {
		f.ExcludeCAPI = false
	}
	return f, withDecisions, nil
}

func (s *Server) getAlerts(w http.ResponseWriter, r *http.Request) {
	now := s.now()
	f, withDecisions, err := alertFilter(r.URL.Query(), now)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	alerts := s.fsm.Alerts(f, now)
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	if len(alerts) == 0 {
		writeRaw(w, http.StatusOK, []byte("null"))
		return
	}
	out := make([]*alertOut, 0, len(alerts))
	for _, a := range alerts {
		out = append(out, s.formatAlert(a, now, withDecisions))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getAlert(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["alert_id"], 10, 64)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "alert_id must be valid integer")
		return
	}
	a := s.fsm.Alert(id)
	if a == nil {
		writeErr(w, http.StatusNotFound, "object not found")
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	writeJSON(w, http.StatusOK, s.formatAlert(a, s.now(), true))
}

func (s *Server) deleteAlerts(w http.ResponseWriter, r *http.Request) {
	f, _, err := alertFilter(r.URL.Query(), s.now())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	f.Limit = 0
	key, err := idemKey(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	// evaluated on the replicated state when applied (see deleteDecisions)
	res, err := s.applyKeyed(r.Context(), commandID(r, key, "alerts-delete", 0), fsm.CmdAlertsDelete, fsm.AlertsDelete{Filter: f})
	if err != nil {
		s.writeApplyErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"nbDeleted": strconv.Itoa(res.N)})
}

func (s *Server) deleteAlert(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["alert_id"], 10, 64)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "alert_id must be valid integer")
		return
	}
	key, err := idemKey(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	res, err := s.applyKeyed(r.Context(), commandID(r, key, "alert-delete", 0), fsm.CmdAlertsDelete, fsm.AlertsDelete{IDs: []int64{id}, MustExist: true})
	if errors.Is(err, fsm.ErrNotFound) {
		writeErr(w, http.StatusInternalServerError, "ent: alert not found")
		return
	}
	if err != nil {
		s.writeApplyErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"nbDeleted": strconv.Itoa(res.N)})
}

// Output shapes (lapi.md §6.2).

type eventOut struct {
	Meta      []fsm.KV `json:"meta"`
	Timestamp string   `json:"timestamp"`
}

type decisionOut struct {
	Duration  string `json:"duration"`
	ID        int64  `json:"id"`
	Origin    string `json:"origin"`
	Scenario  string `json:"scenario"`
	Scope     string `json:"scope"`
	Simulated bool   `json:"simulated"`
	Type      string `json:"type"`
	Value     string `json:"value"`
}

type sourceOut struct {
	AsName    string  `json:"as_name,omitempty"`
	AsNumber  string  `json:"as_number,omitempty"`
	Cn        string  `json:"cn,omitempty"`
	IP        string  `json:"ip,omitempty"`
	Latitude  float32 `json:"latitude,omitempty"`
	Longitude float32 `json:"longitude,omitempty"`
	Range     string  `json:"range,omitempty"`
	Scope     string  `json:"scope"`
	Value     string  `json:"value"`
}

type alertOut struct {
	Capacity        int32          `json:"capacity"`
	CreatedAt       string         `json:"created_at"`
	Decisions       []*decisionOut `json:"decisions"`
	Events          []*eventOut    `json:"events"`
	EventsCount     int32          `json:"events_count"`
	ID              int64          `json:"id"`
	Labels          []string       `json:"labels"`
	Leakspeed       string         `json:"leakspeed"`
	MachineID       string         `json:"machine_id"`
	Message         string         `json:"message"`
	Meta            []fsm.KV       `json:"meta,omitempty"`
	Remediation     bool           `json:"remediation,omitempty"`
	Scenario        string         `json:"scenario"`
	ScenarioHash    string         `json:"scenario_hash"`
	ScenarioVersion string         `json:"scenario_version"`
	Simulated       bool           `json:"simulated"`
	Source          sourceOut      `json:"source"`
	StartAt         string         `json:"start_at"`
	StopAt          string         `json:"stop_at"`
	UUID            string         `json:"uuid,omitempty"`
}

func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }

func (s *Server) formatAlert(a *fsm.Alert, now time.Time, withDecisions bool) *alertOut {
	o := &alertOut{
		Capacity: a.Capacity, CreatedAt: rfc3339(a.CreatedAt), EventsCount: a.EventsCount, ID: a.ID,
		Leakspeed: a.Leakspeed, MachineID: a.MachineID, Message: a.Message, Meta: a.Meta,
		Remediation: a.Remediation, Scenario: a.Scenario, ScenarioHash: a.ScenarioHash,
		ScenarioVersion: a.ScenarioVersion, Simulated: a.Simulated, StartAt: rfc3339(a.StartAt),
		StopAt: rfc3339(a.StopAt), UUID: a.UUID,
		Source: sourceOut{AsName: a.Source.AsName, AsNumber: a.Source.AsNumber, Cn: a.Source.Cn, IP: a.Source.IP,
			Latitude: a.Source.Latitude, Longitude: a.Source.Longitude, Range: a.Source.Range,
			Scope: a.Source.Scope, Value: a.Source.Value},
	}
	if o.MachineID == "" {
		o.MachineID = "N/A"
	}
	for _, e := range a.Events {
		meta := e.Meta
		if meta == nil {
			meta = []fsm.KV{}
		}
		o.Events = append(o.Events, &eventOut{Meta: meta, Timestamp: time.Unix(0, e.Timestamp).UTC().String()})
	}
	if withDecisions {
		n := now.UnixNano()
		for _, d := range s.fsm.AlertDecisions(a) {
			o.Decisions = append(o.Decisions, &decisionOut{Duration: remaining(d.Until, n), ID: d.ID, Origin: d.Origin,
				Scenario: d.Scenario, Scope: d.Scope, Simulated: d.Simulated, Type: d.Type, Value: d.Value})
		}
	}
	return o
}
