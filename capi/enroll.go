package capi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/fsm"
)

// Console enrollment (`cscli console enroll`): POST v3/watchers/enroll
// with the cluster's CAPI credentials. Any node takes the request and
// writes it to the replicated state; the leader, which holds the CAPI
// session, sends it and writes the outcome, which every node's status
// shows.

const (
	// KeyEnrollRequest holds an enrollRequest until the leader served it
	// (then it is cleared: the attachment key is not kept).
	KeyEnrollRequest = "capi:enroll_request"
	// KeyEnrollment holds the Enrollment outcome of the last request.
	KeyEnrollment = "capi:enrollment"
)

const epEnroll = "enroll"

// Bounds of an enrollment request (CAPI's own limits are not published;
// these are far above what the console hands out).
const (
	maxEnrollKey  = 256
	maxEnrollName = 128
	maxEnrollTags = 32
	maxEnrollTag  = 128
)

// EnrollRequest is the body of POST /capi/enroll (admin API).
type EnrollRequest struct {
	Key       string   `json:"attachment_key"`
	Name      string   `json:"name,omitempty"`
	Tags      []string `json:"tags,omitempty"`
	Overwrite bool     `json:"overwrite,omitempty"`
}

func (r EnrollRequest) validate() error {
	str := func(what, v string, maxLen int, required bool) error {
		switch {
		case v == "" && required:
			return fmt.Errorf("%s is required", what)
		case len(v) > maxLen:
			return fmt.Errorf("%s longer than %d bytes", what, maxLen)
		case !utf8.ValidString(v):
			return fmt.Errorf("%s is not valid UTF-8", what)
		}
		for _, c := range v {
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("%s holds a control character", what)
			}
		}
		return nil
	}
	if err := str("enrollment key", r.Key, maxEnrollKey, true); err != nil {
		return err
	}
	if err := str("name", r.Name, maxEnrollName, false); err != nil {
		return err
	}
	if len(r.Tags) > maxEnrollTags {
		return fmt.Errorf("more than %d tags", maxEnrollTags)
	}
	for _, t := range r.Tags {
		if err := str("tag", t, maxEnrollTag, true); err != nil {
			return err
		}
	}
	return nil
}

type enrollRequest struct {
	EnrollRequest
	ID          string `json:"id"`
	RequestedAt int64  `json:"requested_at"`
}

// Enrollment is the outcome of the last enrollment request.
type Enrollment struct {
	ID string `json:"id"`
	// Result: "enrolled" (CAPI created the enrollment: accept it in the
	// console), "already_enrolled" (200 without overwrite, as cscli
	// reports it) or "failed".
	Result  string     `json:"result"`
	Message string     `json:"message"`
	Name    string     `json:"name,omitempty"`
	Tags    []string   `json:"tags,omitempty"`
	Login   string     `json:"login,omitempty"`
	At      *time.Time `json:"at,omitempty"`
}

func (s *Service) enrollRequested() (enrollRequest, bool) {
	var r enrollRequest
	ok := readJSON(s.f, KeyEnrollRequest, &r) && r.ID != ""
	return r, ok
}

func (s *Service) enrollment() (Enrollment, bool) {
	var e Enrollment
	ok := readJSON(s.f, KeyEnrollment, &e) && e.ID != ""
	return e, ok
}

// RequestEnrollment writes an enrollment request for the leader and
// returns its id.
func (s *Service) RequestEnrollment(ctx context.Context, r EnrollRequest) (string, error) {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	req := enrollRequest{EnrollRequest: r, ID: hex.EncodeToString(b), RequestedAt: s.cfg.Now().UnixNano()}
	raw, _ := json.Marshal(req)
	res, err := s.c.Apply(ctx, fsm.Command{Type: fsm.CmdSetConfig, Body: fsm.SetConfig{Key: KeyEnrollRequest, Value: raw}})
	if err != nil {
		return "", err
	}
	if res.Err() != nil {
		return "", res.Err()
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return req.ID, nil
}

// serveEnrollment sends a pending request with the leader's session and
// records its outcome; the request (and its key) is then cleared. A
// network failure or a CAPI error is an outcome too ("failed", with the
// reason): the user runs enroll again, as with cscli.
func (s *Service) serveEnrollment(ctx context.Context, cl *Client) {
	req, ok := s.enrollRequested()
	if !ok {
		return
	}
	if done, ok := s.enrollment(); ok && done.ID == req.ID {
		_ = s.setConfig(ctx, KeyEnrollRequest, nil)
		return
	}
	tags := req.Tags
	if tags == nil {
		tags = []string{}
	}
	body := map[string]any{"attachment_key": req.Key, "name": req.Name, "tags": tags, "overwrite": req.Overwrite}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	status, err := cl.Do(rctx, epEnroll, http.MethodPost, "v3/watchers/enroll", nil, body, nil)
	cancel()
	if ctx.Err() != nil || errors.Is(err, errNotLeader) {
		return // the next leader serves it
	}
	now := s.cfg.Now().UTC()
	out := Enrollment{ID: req.ID, Name: req.Name, Tags: req.Tags, Login: cl.Login(), At: &now}
	switch {
	case err != nil:
		out.Result, out.Message = "failed", "could not enroll instance: "+err.Error()
		s.noteErr(epEnroll, err)
	case status == http.StatusOK && !req.Overwrite:
		out.Result, out.Message = "already_enrolled", "Instance already enrolled. You can use '--overwrite' to force enroll"
	default:
		out.Result, out.Message = "enrolled", "Watcher successfully enrolled. Visit https://app.crowdsec.net to accept it."
		// the token's organization_id claim changes once the enrollment
		// is accepted: log in again on the next call
		if tok, _ := cl.Token(); tok != "" {
			cl.dropToken(tok)
		}
	}
	s.log.Info("CAPI console enrollment", "result", out.Result, "name", req.Name)
	if err := s.setJSON(ctx, KeyEnrollment, out); err != nil {
		s.log.Warn("cannot store the enrollment outcome", "err", err)
		return
	}
	if err := s.setConfig(ctx, KeyEnrollRequest, nil); err != nil {
		s.log.Warn("cannot clear the enrollment request", "err", err)
	}
}

// EnrollWait bounds how long POST /capi/enroll waits for the leader.
var EnrollWait = 30 * time.Second

// EnrollResponse is what POST /capi/enroll answers.
type EnrollResponse struct {
	Message    string      `json:"message"`
	Pending    bool        `json:"pending,omitempty"`
	Enrollment *Enrollment `json:"enrollment,omitempty"`
}

func (s *Service) adminEnroll(w http.ResponseWriter, r *http.Request) {
	var req EnrollRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		admin.WriteError(w, http.StatusBadRequest, "invalid body: "+err.Error())
		return
	}
	if err := req.validate(); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s.cfg.Disabled {
		admin.WriteError(w, http.StatusConflict, "CAPI is disabled on this node (--capi-disable)")
		return
	}
	if readCredentials(s.f) == nil {
		admin.WriteError(w, http.StatusConflict, "the cluster has no CAPI credentials: run `halapi capi register` first")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), EnrollWait)
	defer cancel()
	id, err := s.RequestEnrollment(ctx, req)
	if err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, "cannot submit the enrollment request: "+err.Error())
		return
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if e, ok := s.enrollment(); ok && e.ID == id {
			status := http.StatusOK
			if e.Result == "failed" {
				status = http.StatusBadGateway
			}
			admin.WriteJSON(w, status, EnrollResponse{Message: e.Message, Enrollment: &e})
			return
		}
		select {
		case <-ctx.Done():
			st := s.Status()
			admin.WriteJSON(w, http.StatusAccepted, EnrollResponse{Pending: true,
				Message: "enrollment requested; the leader (" + st.Leader + ") has not sent it yet (see `halapi capi status`)"})
			return
		case <-t.C:
		}
	}
}

// CredentialsFile is CrowdSec's online_api_credentials.yaml.
type CredentialsFile struct {
	URL      string `json:"url" yaml:"url"`
	Login    string `json:"login" yaml:"login"`
	Password string `json:"password" yaml:"password"`
}

func (s *Service) adminCredentials(w http.ResponseWriter, _ *http.Request) {
	sc := readCredentials(s.f)
	if sc == nil {
		admin.WriteError(w, http.StatusNotFound, "the cluster has no CAPI credentials")
		return
	}
	u := sc.URL
	if s.cfg.OverrideURL || u == "" {
		u = s.cfg.URL
	}
	admin.WriteJSON(w, http.StatusOK, CredentialsFile{URL: u, Login: sc.Login, Password: sc.Password})
}
