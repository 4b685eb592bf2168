package lapi

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
	"golang.org/x/crypto/bcrypt"
)

// The admin API is served only on the node's unix socket (package
// admin): whoever can open it is root on the node. These are lapi's
// routes in it; they do what cscli does straight in CrowdSec's database.

// AdminRoutes serves lapi's admin routes (machines, bouncers, decisions,
// alerts, allowlists, flush, audit) on the admin router a (admin.Routes).
func (s *Server) AdminRoutes(a *mux.Router) {
	s.ProfilesAdminRoutes(a) // admin_profiles.go
	a.HandleFunc("/machines", s.adminListMachines).Methods("GET")
	a.HandleFunc("/machines", s.adminAddMachine).Methods("POST")
	a.HandleFunc("/machines/{id}/validate", s.adminValidateMachine).Methods("POST")
	a.HandleFunc("/machines/{id}", s.adminDeleteMachine).Methods("DELETE")
	a.HandleFunc("/machines/{id}", s.adminInspectMachine).Methods("GET")
	a.HandleFunc("/bouncers", s.adminListBouncers).Methods("GET")
	a.HandleFunc("/bouncers", s.adminAddBouncer).Methods("POST")
	a.HandleFunc("/bouncers/{name}", s.adminDeleteBouncer).Methods("DELETE")
	a.HandleFunc("/bouncers/{name}", s.adminInspectBouncer).Methods("GET")
	a.HandleFunc("/decisions", s.adminListDecisions).Methods("GET")
	a.HandleFunc("/decisions", s.adminAddDecision).Methods("POST")
	a.HandleFunc("/decisions", s.deleteDecisions).Methods("DELETE")
	a.HandleFunc("/alerts", s.getAlerts).Methods("GET")
	a.HandleFunc("/alerts/{alert_id}", s.getAlert).Methods("GET")
	a.HandleFunc("/flush", s.adminFlush).Methods("POST")
	a.HandleFunc("/allowlists", s.adminAllowlists).Methods("GET")
	a.HandleFunc("/allowlists", s.adminAllowlistCreate).Methods("POST")
	a.HandleFunc("/allowlists/{name}", s.adminAllowlistDelete).Methods("DELETE")
	a.HandleFunc("/allowlists/{name}/items", s.adminAllowlistAdd).Methods("POST")
	a.HandleFunc("/allowlists/{name}/items", s.adminAllowlistRemove).Methods("DELETE")
	a.HandleFunc("/audit", s.adminAudit).Methods("GET") // audit.go
}

// MachineView is a machine as the admin API shows it (no password hash).
type MachineView struct {
	ID            string     `json:"machine_id"`
	IP            string     `json:"ip_address"`
	Validated     bool       `json:"is_validated"`
	AuthType      string     `json:"auth_type"`
	Version       string     `json:"version"`
	Scenarios     string     `json:"scenarios,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	LastPush      *time.Time `json:"last_push"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
	OS            string     `json:"os,omitempty"`
	FeatureFlags  string     `json:"featureflags,omitempty"`
}

// BouncerView is a bouncer as the admin API shows it (no key hash).
type BouncerView struct {
	Name     string     `json:"name"`
	IP       string     `json:"ip_address"`
	Revoked  bool       `json:"revoked"`
	LastPull *time.Time `json:"last_pull"`
	// LastPullNode is the node that served the last pull, when known.
	LastPullNode string    `json:"last_pull_node,omitempty"`
	Type         string    `json:"type"`
	Version      string    `json:"version"`
	AuthType     string    `json:"auth_type"`
	AutoCreated  bool      `json:"auto_created"`
	CreatedAt    time.Time `json:"created_at"`
	OS           string    `json:"os,omitempty"`
}

func tsPtr(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	t := time.Unix(0, ns).UTC()
	return &t
}

func (s *Server) adminListMachines(w http.ResponseWriter, _ *http.Request) {
	out := []MachineView{}
	for _, m := range s.fsm.Machines() {
		out = append(out, MachineView{ID: m.ID, IP: m.IP, Validated: m.Validated, AuthType: m.AuthType,
			Version: m.Version, Scenarios: m.Scenarios, CreatedAt: time.Unix(0, m.CreatedAt).UTC(),
			UpdatedAt: time.Unix(0, m.UpdatedAt).UTC(), LastPush: tsPtr(m.LastPush),
			LastHeartbeat: tsPtr(m.LastHeartbeat), OS: strings.TrimSpace(m.OSName + "/" + m.OSVersion),
			FeatureFlags: m.FeatureFlags})
	}
	writeJSON(w, http.StatusOK, out)
}

// AddMachineRequest creates a validated password machine.
type AddMachineRequest struct {
	ID       string `json:"machine_id"`
	Password string `json:"password"`
	Force    bool   `json:"force"`
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)[:n]
}

func (s *Server) adminAddMachine(w http.ResponseWriter, r *http.Request) {
	var req AddMachineRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.ID == "" {
		req.ID = randomString(48)
	}
	if err := ValidateMachineID(req.ID); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Password == "" {
		req.Password = randomString(64)
	}
	if len(req.Password) > MaxPasswordLen {
		writeErr(w, http.StatusBadRequest, "password is longer than 72 bytes (bcrypt limit)")
		return
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(req.Password), s.cfg.BcryptCost)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "unable to hash")
		return
	}
	m := fsm.Machine{ID: req.ID, PasswordHash: hash, Validated: true, AuthType: fsm.AuthPassword}
	if _, err := s.apply(r.Context(), fsm.CmdMachineCreate, fsm.MachineCreate{Machine: m, Force: req.Force}); err != nil {
		if errors.Is(err, fsm.ErrConflict) {
			writeErr(w, http.StatusConflict, err.Error())
			return
		}
		s.writeApplyErr(w, err)
		return
	}
	s.waitReplicated(r.Context())
	writeJSON(w, http.StatusCreated, req)
}

func (s *Server) adminValidateMachine(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	t := true
	if _, err := s.apply(r.Context(), fsm.CmdMachineUpdate, fsm.MachineUpdate{ID: id, Validated: &t}); err != nil {
		if errors.Is(err, fsm.ErrNotFound) {
			writeErr(w, http.StatusNotFound, fmt.Sprintf("machine '%s' not found", id))
			return
		}
		s.writeApplyErr(w, err)
		return
	}
	s.waitReplicated(r.Context())
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminDeleteMachine(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	if s.fsm.Machine(id) == nil {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("machine '%s' not found", id))
		return
	}
	if _, err := s.apply(r.Context(), fsm.CmdMachineDelete, fsm.MachineDelete{IDs: []string{id}}); err != nil {
		if errors.Is(err, fsm.ErrNotFound) { // deleted meanwhile: the answer above
			writeErr(w, http.StatusNotFound, fmt.Sprintf("machine '%s' not found", id))
			return
		}
		s.writeApplyErr(w, err)
		return
	}
	s.waitReplicated(r.Context())
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) adminListBouncers(w http.ResponseWriter, _ *http.Request) {
	out := []BouncerView{}
	for _, b := range s.fsm.Bouncers() {
		lp, node := s.touches.cursor(b).LastPull, b.LastPullNode
		if lp > b.LastPull {
			node = s.cfg.NodeID // served here, not yet replicated
		}
		out = append(out, BouncerView{Name: b.Name, IP: b.IP, Revoked: b.Revoked, LastPull: tsPtr(lp), LastPullNode: node,
			Type: b.Type, Version: b.Version, AuthType: b.AuthType, AutoCreated: b.AutoCreated,
			CreatedAt: time.Unix(0, b.CreatedAt).UTC(), OS: strings.Trim(b.OSName+"/"+b.OSVersion, "/")})
	}
	writeJSON(w, http.StatusOK, out)
}

// AddBouncerRequest creates an API-key bouncer; Key is generated when empty.
type AddBouncerRequest struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

func (s *Server) adminAddBouncer(w http.ResponseWriter, r *http.Request) {
	var req AddBouncerRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Name == "" {
		writeErr(w, http.StatusBadRequest, "bouncer name is required")
		return
	}
	if req.Key == "" {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		req.Key = base64.RawStdEncoding.EncodeToString(b)
	}
	nb := fsm.Bouncer{Name: req.Name, KeyHash: HashKey(req.Key), AuthType: fsm.AuthAPIKey}
	if _, err := s.apply(r.Context(), fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: nb}); err != nil {
		if errors.Is(err, fsm.ErrConflict) {
			writeErr(w, http.StatusConflict, err.Error())
			return
		}
		s.writeApplyErr(w, err)
		return
	}
	s.waitReplicated(r.Context())
	writeJSON(w, http.StatusCreated, req)
}

func (s *Server) adminDeleteBouncer(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	b := s.fsm.Bouncer(name)
	if b == nil {
		writeErr(w, http.StatusNotFound, fmt.Sprintf("bouncer '%s' not found", name))
		return
	}
	if b.AutoCreated && b.AuthType == fsm.AuthAPIKey {
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("bouncer '%s' was created automatically for a shared key: delete its parent", name))
		return
	}
	names := []string{name}
	for _, o := range s.fsm.Bouncers() {
		if o.AutoCreated && o.AuthType == fsm.AuthAPIKey && o.KeyHash == b.KeyHash && stripIPSuffixes(o.Name) == name {
			names = append(names, o.Name)
		}
	}
	if _, err := s.apply(r.Context(), fsm.CmdBouncerDelete, fsm.BouncerDelete{Names: names}); err != nil {
		s.writeApplyErr(w, err)
		return
	}
	s.waitReplicated(r.Context())
	w.WriteHeader(http.StatusNoContent)
}

// DecisionView is a decision as the admin API lists it.
type DecisionView struct {
	ID        int64  `json:"id"`
	AlertID   int64  `json:"alert_id"`
	Origin    string `json:"origin"`
	Type      string `json:"type"`
	Scope     string `json:"scope"`
	Value     string `json:"value"`
	Scenario  string `json:"scenario"`
	Duration  string `json:"duration"`
	Simulated bool   `json:"simulated"`
}

func (s *Server) adminListDecisions(w http.ResponseWriter, r *http.Request) {
	f, err := bouncerFilter(r.URL.Query(), false)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	f.IncludeSimulated = true
	now := s.now()
	out := []DecisionView{}
	for _, d := range s.fsm.Decisions(f, now) {
		out = append(out, DecisionView{ID: d.ID, AlertID: d.AlertID, Origin: d.Origin, Type: d.Type, Scope: d.Scope,
			Value: d.Value, Scenario: d.Scenario, Duration: remaining(d.Until, now.UnixNano()), Simulated: d.Simulated})
	}
	writeJSON(w, http.StatusOK, out)
}

// AddDecisionRequest adds a manual decision, as cscli decisions add does.
type AddDecisionRequest struct {
	Value    string `json:"value"`
	Scope    string `json:"scope"`
	Type     string `json:"type"`
	Duration string `json:"duration"`
	Reason   string `json:"reason"`
}

func (s *Server) adminAddDecision(w http.ResponseWriter, r *http.Request) {
	var req AddDecisionRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Value == "" {
		writeErr(w, http.StatusBadRequest, "a value is required")
		return
	}
	if req.Type == "" {
		req.Type = "ban"
	}
	if req.Duration == "" {
		req.Duration = "4h"
	}
	if req.Scope == "" {
		req.Scope = models.ScopeIP
		if strings.Contains(req.Value, "/") {
			req.Scope = models.ScopeRange
		}
	}
	req.Scope = models.NormalizeScope(req.Scope)
	if fsm.IsIPScope(req.Scope) {
		if _, err := fsm.ParseRange(req.Value); err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	dur, err := models.ParseDuration(req.Duration)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "invalid duration: "+err.Error())
		return
	}
	if req.Reason == "" {
		req.Reason = fmt.Sprintf("manual '%s' from 'halapi'", req.Type)
	}
	now := s.now().UnixNano()
	a := fsm.Alert{UUID: uuid.NewString(), Scenario: req.Reason, Message: req.Reason, EventsCount: 1,
		Leakspeed: "0", StartAt: now, StopAt: now, Remediation: true,
		Source: fsm.Source{Scope: req.Scope, Value: req.Value, IP: req.Value}}
	d := fsm.Decision{UUID: fsm.UUID(uuid.New()), Origin: "cscli", Type: req.Type, Scope: req.Scope, Value: req.Value,
		Scenario: req.Reason, Until: fsm.ClampUntil(now, fsm.AddClamped(now, int64(dur)))}
	a.Notify = s.manualNotify(&a, &d)
	res, err := s.apply(r.Context(), fsm.CmdAlertsCreate, fsm.AlertsCreate{Alerts: []fsm.NewAlert{{Alert: a, Decisions: []fsm.Decision{d}}}})
	if err != nil {
		s.writeApplyErr(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"alert_ids": res.IDs})
}

func (s *Server) adminFlush(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	body := fsm.Flush{MaxAge: int64(s.cfg.FlushMaxAge), MaxItems: s.cfg.FlushMaxItems}
	if v := q.Get("max_items"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeErr(w, http.StatusBadRequest, "max_items must be a non-negative integer")
			return
		}
		body.MaxItems = n
	}
	if v := q.Get("max_age"); v != "" {
		d, err := models.ParseDuration(v)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "invalid max_age: "+err.Error())
			return
		}
		body.MaxAge = int64(d)
	}
	res, err := s.apply(r.Context(), fsm.CmdFlush, body)
	if err != nil {
		s.writeApplyErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"deleted_alerts": res.N})
}

func (s *Server) adminAllowlists(w http.ResponseWriter, _ *http.Request) {
	now := s.now()
	out := []allowlistOut{}
	for _, a := range s.fsm.Allowlists() {
		out = append(out, formatAllowlist(a, true, now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) adminAllowlistCreate(w http.ResponseWriter, r *http.Request) {
	var req fsm.AllowlistCreate
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Name == "" {
		writeErr(w, http.StatusBadRequest, "a JSON body with a name is required")
		return
	}
	if _, err := s.apply(r.Context(), fsm.CmdAllowlistCreate, req); err != nil {
		s.writeCmdErr(w, err, http.StatusConflict)
		return
	}
	s.waitReplicated(r.Context())
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) adminAllowlistDelete(w http.ResponseWriter, r *http.Request) {
	if _, err := s.apply(r.Context(), fsm.CmdAllowlistDelete, fsm.AllowlistDelete{Name: mux.Vars(r)["name"]}); err != nil {
		s.writeCmdErr(w, err, http.StatusNotFound)
		return
	}
	s.waitReplicated(r.Context())
	w.WriteHeader(http.StatusNoContent)
}

// AllowlistItemsRequest adds or removes allowlist values.
type AllowlistItemsRequest struct {
	Values     []string `json:"values"`
	Comment    string   `json:"comment,omitempty"`
	Expiration string   `json:"expiration,omitempty"` // duration from now
}

func (s *Server) adminAllowlistAdd(w http.ResponseWriter, r *http.Request) {
	var req AllowlistItemsRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Values) == 0 {
		writeErr(w, http.StatusBadRequest, "a JSON body with values is required")
		return
	}
	var exp int64
	if req.Expiration != "" {
		d, err := models.ParseDuration(req.Expiration)
		if err != nil {
			writeErr(w, http.StatusBadRequest, "invalid expiration: "+err.Error())
			return
		}
		exp = s.now().Add(d).UnixNano()
	}
	body := fsm.AllowlistAdd{Name: mux.Vars(r)["name"]}
	for _, v := range req.Values {
		if _, err := fsm.ParseRange(v); err != nil {
			writeErr(w, http.StatusBadRequest, err.Error())
			return
		}
		body.Items = append(body.Items, fsm.AllowlistItem{Value: v, Comment: req.Comment, Expiration: exp})
	}
	res, err := s.apply(r.Context(), fsm.CmdAllowlistAdd, body)
	if err != nil {
		s.writeCmdErr(w, err, http.StatusBadRequest)
		return
	}
	s.waitReplicated(r.Context())
	writeJSON(w, http.StatusOK, map[string]int{"added": res.N})
}

func (s *Server) adminAllowlistRemove(w http.ResponseWriter, r *http.Request) {
	var req AllowlistItemsRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Values) == 0 {
		writeErr(w, http.StatusBadRequest, "a JSON body with values is required")
		return
	}
	res, err := s.apply(r.Context(), fsm.CmdAllowlistRemove, fsm.AllowlistRemove{Name: mux.Vars(r)["name"], Values: req.Values})
	if err != nil {
		s.writeCmdErr(w, err, http.StatusBadRequest)
		return
	}
	s.waitReplicated(r.Context())
	writeJSON(w, http.StatusOK, map[string]int{"removed": res.N})
}
