package lapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/halapi/halapi/fsm"
	"golang.org/x/crypto/bcrypt"
)

type registrationRequest struct {
	MachineID         *string `json:"machine_id"`
	Password          *string `json:"password"`
	RegistrationToken string  `json:"registration_token"`
}

func (s *Server) registerMachine(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	if s.cfg.DisableRemoteRegistration && ip != "127.0.0.1" && ip != "::1" {
		writeErr(w, http.StatusForbidden, "access forbidden")
		return
	}
	var req registrationRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	var errs []string
	if req.MachineID == nil {
		errs = append(errs, "machine_id in body is required")
	}
	if req.Password == nil {
		errs = append(errs, "password in body is required")
	}
	if t := req.RegistrationToken; t != "" && (len(t) < 32 || len(t) > 255) {
		if len(t) < 32 {
			errs = append(errs, "registration_token in body should be at least 32 chars long")
		} else {
			errs = append(errs, "registration_token in body should be at most 255 chars long")
		}
	}
	if len(errs) > 0 {
		writeErr(w, http.StatusUnprocessableEntity, "validation failure list:\n"+strings.Join(errs, "\n"))
		return
	}
	validated := false
	if s.cfg.AutoRegToken != "" && req.RegistrationToken != "" {
		if req.RegistrationToken != s.cfg.AutoRegToken {
			writeErr(w, http.StatusUnauthorized, "invalid token for auto registration")
			return
		}
		if !ipInPrefixes(ip, s.cfg.AutoRegRanges) {
			writeErr(w, http.StatusUnauthorized, "IP not in allowed range for auto registration")
			return
		}
		validated = true
	}
	if s.fsm.Machine(*req.MachineID) != nil {
		writeErr(w, http.StatusForbidden, fmt.Sprintf("user '%s': user already exist", *req.MachineID))
		return
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(*req.Password), s.cfg.BcryptCost)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "unable to hash")
		return
	}
	m := fsm.Machine{ID: *req.MachineID, PasswordHash: hash, IP: ip, Validated: validated, AuthType: fsm.AuthPassword}
	if _, err := s.apply(r.Context(), fsm.CmdMachineCreate, fsm.MachineCreate{Machine: m}); err != nil {
		if errors.Is(err, fsm.ErrConflict) {
			writeErr(w, http.StatusForbidden, err.Error())
			return
		}
		s.writeApplyErr(w, err)
		return
	}
	if validated {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

type loginRequest struct {
	MachineID *string  `json:"machine_id"`
	Password  *string  `json:"password"`
	Scenarios []string `json:"scenarios"`
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.hasClientCert(r) {
		s.loginWithCert(w, r)
		return
	}
	var req loginRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		jwtErr(w, http.StatusUnauthorized, "missing: "+err.Error())
		return
	}
	var errs []string
	if req.MachineID == nil {
		errs = append(errs, "machine_id in body is required")
	}
	if req.Password == nil {
		errs = append(errs, "password in body is required")
	}
	if len(errs) > 0 {
		jwtErr(w, http.StatusUnauthorized, "validation failure list:\n"+strings.Join(errs, "\n"))
		return
	}
	id := *req.MachineID
	m := s.fsm.Machine(id)
	switch {
	case m == nil:
		jwtErr(w, http.StatusUnauthorized, "ent: machine not found")
		return
	case m.AuthType != fsm.AuthPassword:
		jwtErr(w, http.StatusUnauthorized, fmt.Sprintf("machine %s attempted to auth with password but it is configured to use tls", id))
		return
	case !m.Validated:
		jwtErr(w, http.StatusUnauthorized, fmt.Sprintf("machine %s not validated", id))
		return
	}
	if bcrypt.CompareHashAndPassword(m.PasswordHash, []byte(*req.Password)) != nil {
		jwtErr(w, http.StatusUnauthorized, "incorrect Username or Password")
		return
	}
	s.loginPostSteps(w, r, m, req.Scenarios)
}

// loginPostSteps records scenarios, IP and version, then answers with a token.
func (s *Server) loginPostSteps(w http.ResponseWriter, r *http.Request, m *fsm.Machine, scenarios []string) {
	parts := strings.Split(r.UserAgent(), "/")
	if len(parts) != 2 {
		jwtErr(w, http.StatusUnauthorized, "incorrect Username or Password")
		return
	}
	upd := fsm.MachineUpdate{ID: m.ID}
	changed := false
	if len(scenarios) > 0 {
		sc := strings.Join(scenarios, ",")
		if sc != m.Scenarios {
			upd.Scenarios = &sc
			changed = true
		}
	}
	if ip := clientIP(r); ip != m.IP {
		upd.IP = &ip
		changed = true
	}
	if parts[1] != m.Version {
		upd.Version = &parts[1]
		changed = true
	}
	if changed {
		if _, err := s.apply(r.Context(), fsm.CmdMachineUpdate, upd); err != nil {
			// Login must keep working without a quorum: the details are
			// refreshed at the next login.
			s.log.Warn("cannot record login details", "machine", m.ID, "err", err)
		}
	}
	s.writeToken(w, m.ID)
}

func (s *Server) writeToken(w http.ResponseWriter, id string) {
	tok, exp, err := s.issueToken(id)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		jwtErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"code": 200, "expire": exp.Format(time.RFC3339), "token": tok})
}

func (s *Server) refreshToken(w http.ResponseWriter, r *http.Request) {
	raw, msg := tokenFromRequest(r)
	if raw == "" {
		jwtErr(w, http.StatusUnauthorized, msg)
		return
	}
	claims, status, err := s.parseToken(raw, true)
	if err != nil {
		jwtErr(w, status, err.Error())
		return
	}
	iat, _ := claims["orig_iat"].(float64)
	if int64(iat) < s.now().Add(-tokenTTL).Unix() {
		jwtErr(w, http.StatusUnauthorized, "token is expired")
		return
	}
	s.writeToken(w, claims["id"].(string))
}

func (s *Server) deleteSelf(w http.ResponseWriter, r *http.Request) {
	id := machineID(r)
	if s.fsm.Machine(id) == nil {
		writeErr(w, http.StatusInternalServerError, fmt.Sprintf("'%s' does not exist", id))
		return
	}
	if _, err := s.apply(r.Context(), fsm.CmdMachineDelete, fsm.MachineDelete{IDs: []string{id}}); err != nil {
		if errors.Is(err, fsm.ErrNotFound) { // deleted meanwhile: the answer above
			writeErr(w, http.StatusInternalServerError, err.Error())
			return
		}
		s.writeApplyErr(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	s.touches.machine(machineID(r), s.now().UnixNano())
	w.WriteHeader(http.StatusOK)
}
