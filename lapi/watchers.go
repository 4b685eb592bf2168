package lapi

import (
	"context"
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
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAnonBody)).Decode(&req); err != nil {
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
	if err := ValidateMachineID(*req.MachineID); err != nil {
		s.metrics.registrationRefused("invalid")
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(*req.Password) > MaxPasswordLen {
		s.metrics.registrationRefused("invalid")
		writeErr(w, http.StatusBadRequest, fmt.Sprintf("password is longer than %d bytes (bcrypt limit)", MaxPasswordLen))
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
	if !validated {
		// What an anonymous client can make every node store: a few per
		// source address, a bounded number in total, each for a while.
		if ok, wait := s.regLimit.allow(limitKey(ip), s.now()); !ok {
			s.metrics.registrationRefused("rate")
			tooMany(w, wait, "too many registrations from this address, retry later")
			return
		}
		if max := s.cfg.MaxUnvalidatedMachines; max > 0 && s.countUnvalidated() >= max {
			s.metrics.registrationRefused("pending_cap")
			s.log.Warn("registration refused: too many machines waiting for validation", "limit", max, "ip", ip)
			tooMany(w, time.Minute, fmt.Sprintf("registration refused: %d machines are already waiting for validation", max))
			return
		}
	}
	var hash []byte
	var err error
	if werr := s.withBcrypt(r.Context(), func() {
		hash, err = bcrypt.GenerateFromPassword([]byte(*req.Password), s.cfg.BcryptCost)
	}); werr != nil {
		return // the client went away while waiting
	}
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
	ip := clientIP(r)
	ipKey := limitKey(ip)
	now := s.now()
	if wait := s.loginIP.blocked(ipKey, now); wait > 0 {
		s.metrics.loginFailed("throttled")
		w.Header().Set("WWW-Authenticate", realmHeader)
		tooMany(w, wait, "too many failed logins from this address, retry later")
		return
	}
	var req loginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAnonBody)).Decode(&req); err != nil {
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
	if err := ValidateMachineID(id); err != nil {
		s.metrics.loginFailed("invalid")
		jwtErr(w, http.StatusBadRequest, err.Error())
		return
	}
	m := s.fsm.Machine(id)
	// The per-id backoff does not apply where the machine last logged in
	// from, so guessing from elsewhere cannot lock a working agent out.
	if m == nil || m.IP != ip {
		if wait := s.loginMachine.blocked(id, now); wait > 0 {
			s.metrics.loginFailed("throttled")
			w.Header().Set("WWW-Authenticate", realmHeader)
			tooMany(w, wait, "too many failed logins for this machine, retry later")
			return
		}
	}
	pw := []byte(*req.Password)
	tooLong := len(pw) > MaxPasswordLen
	if tooLong {
		pw = pw[:MaxPasswordLen] // same cost; never a match
	}
	// Unknown machine, TLS machine and wrong password cost one bcrypt
	// comparison each and get one answer.
	check := func(m *fsm.Machine) (reason string, ok bool, err error) {
		hash, reason := s.dummyHash, "unknown_machine"
		if m != nil {
			if m.AuthType == fsm.AuthPassword {
				hash, reason = m.PasswordHash, "wrong_password"
			} else {
				reason = "tls_machine"
			}
		}
		var mismatch error
		if err := s.withBcrypt(r.Context(), func() { mismatch = bcrypt.CompareHashAndPassword(hash, pw) }); err != nil {
			return reason, false, err
		}
		return reason, mismatch == nil && reason == "wrong_password" && !tooLong, nil
	}
	reason, ok, err := check(m)
	if err != nil {
		return // the client went away while waiting
	}
	if (!ok || !m.Validated) && s.confirmRefusal(r.Context()) {
		// this node's copy may predate an acknowledged add/validate
		if m2 := s.fsm.Machine(id); m2 != m {
			m = m2
			if reason, ok, err = check(m); err != nil {
				return
			}
		}
	}
	if !ok {
		s.loginIP.fail(ipKey, now)
		s.loginMachine.fail(id, now)
		s.metrics.loginFailed(reason)
		s.log.Warn("login failed", "machine", id, "ip", ip, "reason", reason)
		jwtErr(w, http.StatusUnauthorized, "incorrect Username or Password")
		return
	}
	s.loginMachine.reset(id)
	if !m.Validated {
		jwtErr(w, http.StatusUnauthorized, fmt.Sprintf("machine %s not validated", id))
		return
	}
	s.loginPostSteps(w, r, m, req.Scenarios)
}

// withBcrypt runs f (a bcrypt hash or comparison, ~50 ms of CPU at cost
// 10) once a slot is free: anonymous clients can ask for these at will,
// and at most GOMAXPROCS-1 of them (at least 1) run at once, so the
// remaining CPU keeps serving bouncers and /health.
func (s *Server) withBcrypt(ctx context.Context, f func()) error {
	select {
	case s.bcryptSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.bcryptSlots }()
	f()
	return nil
}

// countUnvalidated counts the machines waiting for validation.
func (s *Server) countUnvalidated() int {
	n := 0
	for _, m := range s.fsm.Machines() {
		if !m.Validated {
			n++
		}
	}
	return n
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
	s.writeToken(w, m, s.now(), certThumbIf(r, m))
}

// certThumbIf binds the tokens of certificate machines to the certificate.
func certThumbIf(r *http.Request, m *fsm.Machine) string {
	if m.AuthType != fsm.AuthTLS {
		return ""
	}
	return certThumb(r)
}

func (s *Server) writeToken(w http.ResponseWriter, m *fsm.Machine, origIat time.Time, thumb string) {
	tok, exp, err := s.issueToken(m, origIat, thumb)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		jwtErr(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"code": 200, "expire": exp.Format(time.RFC3339), "token": tok})
}

// refreshToken renews a token (expired ones too) with its original login
// time: refused from orig_iat + TokenMaxAge on, and for tokens that no
// longer match the machine's credentials or predate generations. Agents
// never call it (they log in again a minute before exp, and on a 401).
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
	iat, ok := claims["orig_iat"].(float64)
	if !ok {
		jwtErr(w, http.StatusUnauthorized, "token has no orig_iat: log in again")
		return
	}
	orig := time.Unix(int64(iat), 0)
	if !s.now().Before(orig.Add(s.tokenMaxAge())) {
		jwtErr(w, http.StatusUnauthorized, "token is expired: past its maximum lifetime, log in again")
		return
	}
	if _, ok := claims["gen"].(string); !ok {
		jwtErr(w, http.StatusUnauthorized, "token predates credential generations: log in again")
		return
	}
	id := claims["id"].(string)
	if msg := s.confirmedTokenRefusal(r, claims, id); msg != "" {
		jwtErr(w, http.StatusUnauthorized, msg)
		return
	}
	m := s.fsm.Machine(id)
	if m == nil || credGen(m) != claims["gen"] {
		jwtErr(w, http.StatusUnauthorized, "token was revoked: the machine's credentials changed")
		return
	}
	cnf, _ := claims["cnf"].(map[string]any)
	thumb, _ := cnf["x5t#S256"].(string)
	s.writeToken(w, m, orig, thumb)
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
	s.waitReplicated(r.Context())
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	s.touches.machine(machineID(r), s.now().UnixNano())
	w.WriteHeader(http.StatusOK)
}
