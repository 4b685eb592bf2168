package lapi

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/halapi/halapi/fsm"
	"golang.org/x/crypto/bcrypt"
)

// CertVerifier applies CrowdSec's TLS client-certificate rules
// (lapi.md §2.4); implemented by pki.ClientVerifier.
type CertVerifier interface {
	// HasCert reports whether the connection carries a client certificate:
	// then it alone decides (password and API key are ignored).
	HasCert(cs *tls.ConnectionState) bool
	// Verify checks the certificate for an agent (agent=true) or a bouncer
	// and returns its identity (the subject CN).
	Verify(cs *tls.ConnectionState, agent bool) (string, error)
}

// SetCertVerifier enables TLS client-certificate auth.
func (s *Server) SetCertVerifier(v CertVerifier) { s.certs = v }

func (s *Server) hasClientCert(r *http.Request) bool {
	return s.certs != nil && r.TLS != nil && s.certs.HasCert(r.TLS)
}

// loginWithCert logs a machine in by its certificate: machine <CN>@<ip>,
// created validated with auth type tls on first use.
func (s *Server) loginWithCert(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		jwtErr(w, http.StatusUnauthorized, "missing scenarios list in login request for TLS auth: "+err.Error())
		return
	}
	cn, err := s.certs.Verify(r.TLS, true)
	if err != nil {
		jwtErr(w, http.StatusUnauthorized, "TLS auth failed: "+err.Error())
		return
	}
	id := cn + "@" + clientIP(r)
	m := s.fsm.Machine(id)
	if m == nil {
		pw := make([]byte, 32)
		_, _ = rand.Read(pw)
		hash, err := bcrypt.GenerateFromPassword(pw, bcrypt.MinCost)
		if err != nil {
			jwtErr(w, http.StatusUnauthorized, "unable to hash")
			return
		}
		nm := fsm.Machine{ID: id, PasswordHash: hash, Validated: true, AuthType: fsm.AuthTLS}
		// A concurrent first use (on this node or another) may have created
		// it meanwhile: that is fine, the row is read again below.
		if _, err := s.apply(r.Context(), fsm.CmdMachineCreate, fsm.MachineCreate{Machine: nm}); err != nil && s.fsm.Machine(id) == nil {
			jwtErr(w, http.StatusUnauthorized, "cannot create machine "+id+": "+err.Error())
			return
		}
		if m = s.fsm.Machine(id); m == nil {
			jwtErr(w, http.StatusUnauthorized, "machine "+id+" not found")
			return
		}
	}
	if m.AuthType != fsm.AuthTLS {
		jwtErr(w, http.StatusUnauthorized, fmt.Sprintf("machine %s attempted to auth with TLS cert but it is configured to use %s", id, m.AuthType))
		return
	}
	s.loginPostSteps(w, r, m, req.Scenarios)
}

// bouncerWithCert identifies a bouncer by its certificate: bouncer
// <CN>@<ip>, created with auth type tls on first use.
func (s *Server) bouncerWithCert(r *http.Request) (*fsm.Bouncer, error) {
	cn, err := s.certs.Verify(r.TLS, false)
	if err != nil {
		s.log.Info("bouncer certificate refused", "ip", clientIP(r), "err", err)
		return nil, errForbidden
	}
	ip := clientIP(r)
	name := cn + "@" + ip
	b := s.fsm.Bouncer(name)
	if b == nil {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		nb := fsm.Bouncer{Name: name, KeyHash: HashKey(fmt.Sprintf("%x", key)), IP: ip, AuthType: fsm.AuthTLS, AutoCreated: true}
		nb.Type, nb.Version = splitUA(r.UserAgent())
		// a concurrent first use may have created it meanwhile: read again
		if _, err := s.apply(r.Context(), fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: nb}); err != nil && s.fsm.Bouncer(name) == nil {
			s.log.Warn("cannot create bouncer for certificate", "bouncer", name, "err", err)
			return nil, errForbidden
		}
		if b = s.fsm.Bouncer(name); b == nil {
			return nil, errForbidden
		}
	}
	if b.AuthType != fsm.AuthTLS {
		return nil, errForbidden
	}
	if r.Method == http.MethodHead {
		return b, nil
	}
	return s.bouncerSeen(r, b), nil
}
