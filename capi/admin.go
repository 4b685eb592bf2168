package capi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
)

// BlocklistStatus is one subscribed blocklist as status shows it.
type BlocklistStatus struct {
	Name     string `json:"name"`
	LastPull string `json:"last_pull"`
	Count    int    `json:"count"`
}

// StatusView is the CAPI status of the cluster as one node sees it. The
// replicated part (credentials, token expiry, cursors, last pull/push
// times) is the same on every node; the live part (errors, streaks,
// metrics sends) exists only on the leader that runs the loops.
type StatusView struct {
	Enabled bool `json:"enabled"`
	// State: disabled, follower, no credentials, starting, running, stopped.
	State     string `json:"state"`
	Node      string `json:"node,omitempty"`
	Leader    string `json:"leader,omitempty"`
	LeaderAPI string `json:"leader_api,omitempty"`
	// Active is true on the node that runs the loops (the leader), since
	// ActiveSince.
	Active      bool       `json:"active"`
	ActiveSince *time.Time `json:"active_since,omitempty"`

	URL               string     `json:"url,omitempty"`
	Login             string     `json:"login,omitempty"`
	Registered        bool       `json:"registered"`
	CredentialsSource string     `json:"credentials_source,omitempty"`
	TokenExpires      *time.Time `json:"token_expires,omitempty"`
	TokenValid        bool       `json:"token_valid"`
	Enrolled          bool       `json:"enrolled"`
	// Enrollment is the outcome of the last `capi enroll`;
	// EnrollPending is true while a request waits for the leader.
	Enrollment      *Enrollment `json:"enrollment,omitempty"`
	EnrollPending   bool        `json:"enroll_pending,omitempty"`
	Subscription    string      `json:"subscription,omitempty"`
	RegisterPending bool        `json:"register_pending,omitempty"`
	RegisterError   string      `json:"register_error,omitempty"`

	Sharing        bool     `json:"sharing"`
	PullCommunity  bool     `json:"pull_community"`
	PullBlocklists bool     `json:"pull_blocklists"`
	ConsoleOptions []string `json:"console_options"`

	LastPull         *time.Time        `json:"last_pull,omitempty"`
	LastPullNew      int               `json:"last_pull_new"`
	LastPullDeleted  int               `json:"last_pull_deleted"`
	Blocklists       []BlocklistStatus `json:"blocklists,omitempty"`
	LastPush         *time.Time        `json:"last_push,omitempty"`
	PushCursor       int64             `json:"push_cursor"`
	SignalsPushed    int64             `json:"signals_pushed"`
	LastMetrics      *time.Time        `json:"last_metrics,omitempty"`
	LastUsageMetrics *time.Time        `json:"last_usage_metrics,omitempty"`
	Decisions        map[string]int    `json:"decisions"`

	LastError     string     `json:"last_error,omitempty"`
	LastErrorAt   *time.Time `json:"last_error_at,omitempty"`
	ErrorCount    int64      `json:"error_count"`
	FailureStreak int        `json:"failure_streak"`

	PAPI string `json:"papi"`
}

func tptr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func nsptr(ns int64) *time.Time {
	if ns == 0 {
		return nil
	}
	return tptr(time.Unix(0, ns))
}

// Status returns the CAPI status: the replicated part on any node, plus
// the in-memory part on the leader.
func (s *Service) Status() StatusView {
	v := StatusView{Enabled: !s.cfg.Disabled, Sharing: s.cfg.Sharing, PullCommunity: s.cfg.PullCommunity,
		PullBlocklists: s.cfg.PullBlocklists, ConsoleOptions: s.cfg.Console.Enabled(),
		PAPI: "not supported by halapi (console polling is out of scope)"}
	if v.ConsoleOptions == nil {
		v.ConsoleOptions = []string{}
	}
	if s.cfg.Cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v.Node, v.Leader, v.LeaderAPI = s.cfg.Cluster(ctx)
		cancel()
	}
	if s.cfg.Disabled {
		v.State = "disabled"
		return v
	}
	now := s.cfg.Now()
	if sc := readCredentials(s.f); sc != nil {
		v.URL, v.Login, v.Registered, v.CredentialsSource = sc.URL, sc.Login, sc.Registered, sc.Source
		if s.cfg.OverrideURL {
			v.URL = s.cfg.URL
		}
	}
	if tok := s.f.Config(KeyToken); tok != nil {
		if ti, err := ParseToken(string(tok)); err == nil {
			v.TokenExpires = tptr(ti.Expires)
			v.TokenValid = ti.Expires.Sub(now) > tokenMargin
			v.Enrolled = ti.OrganizationID != ""
			v.Subscription = ti.SubscriptionType
		}
	}
	if req, ok := s.registerRequested(); ok {
		v.RegisterPending, v.RegisterError = true, req.LastError
	}
	if e, ok := s.enrollment(); ok {
		v.Enrollment = &e
	}
	_, v.EnrollPending = s.enrollRequested()
	if p, ok := readPush(s.f); ok {
		v.PushCursor, v.SignalsPushed, v.LastPush = p.Cursor, p.Pushed, nsptr(p.LastPush)
	}
	ps := readPull(s.f)
	v.LastPull, v.LastPullNew, v.LastPullDeleted = nsptr(ps.LastPull), ps.LastNew, ps.LastDeleted
	for name, b := range ps.Blocklists {
		v.Blocklists = append(v.Blocklists, BlocklistStatus{Name: name, LastPull: b.LastPull, Count: b.Count})
	}
	sort.Slice(v.Blocklists, func(i, j int) bool { return v.Blocklists[i].Name < v.Blocklists[j].Name })
	v.Decisions = s.metrics.decisionCounts()

	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		v.State = "follower"
		if s.c.IsLeader() {
			v.State = "starting"
		}
		return v
	}
	m := s.mem
	v.Active, v.State, v.ActiveSince = true, m.state, tptr(m.since)
	if v.Node != "" && v.Leader == "" {
		v.Leader = v.Node
	}
	if s.client != nil {
		if tok, ti := s.client.Token(); tok != "" {
			v.TokenExpires, v.TokenValid = tptr(ti.Expires), ti.Expires.Sub(now) > tokenMargin
			v.Enrolled, v.Subscription = ti.OrganizationID != "", ti.SubscriptionType
		}
	}
	if !m.lastPull.IsZero() {
		v.LastPull = tptr(m.lastPull)
	}
	if !m.lastPush.IsZero() {
		v.LastPush = tptr(m.lastPush)
	}
	v.LastMetrics, v.LastUsageMetrics = tptr(m.lastMetrics), tptr(m.lastUsage)
	v.LastError, v.LastErrorAt, v.ErrorCount, v.FailureStreak = m.lastError, tptr(m.lastErrorAt), m.errorCount, m.streak
	return v
}

// RegisterResponse is what POST /capi/register answers.
type RegisterResponse struct {
	Message string     `json:"message"`
	Status  StatusView `json:"status"`
}

// AdminRoutes serves the CAPI admin API under the admin router:
// GET /capi/status and POST /capi/register (body {"force": bool}).
func (s *Service) AdminRoutes(r *mux.Router) {
	r.HandleFunc("/capi/status", func(w http.ResponseWriter, _ *http.Request) {
		admin.WriteJSON(w, http.StatusOK, s.Status())
	}).Methods(http.MethodGet)
	r.HandleFunc("/capi/register", s.adminRegister).Methods(http.MethodPost)
	r.HandleFunc("/capi/enroll", s.adminEnroll).Methods(http.MethodPost)
	r.HandleFunc("/capi/credentials", s.adminCredentials).Methods(http.MethodGet)
}

// RegisterWait bounds how long POST /capi/register waits for the leader.
var RegisterWait = 20 * time.Second

func (s *Service) adminRegister(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Force bool `json:"force"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			admin.WriteError(w, http.StatusBadRequest, "invalid body: "+err.Error())
			return
		}
	}
	if s.cfg.Disabled {
		admin.WriteError(w, http.StatusConflict, "CAPI is disabled on this node (--capi-disable)")
		return
	}
	if sc := readCredentials(s.f); sc != nil && sc.Registered && !req.Force {
		admin.WriteJSON(w, http.StatusOK, RegisterResponse{Message: "already registered as " + sc.Login +
			" (use --force to register new credentials)", Status: s.Status()})
		return
	}
	before := ""
	if sc := readCredentials(s.f); sc != nil {
		before = sc.Login
	}
	ctx, cancel := context.WithTimeout(r.Context(), RegisterWait)
	defer cancel()
	if err := s.RequestRegistration(ctx, req.Force); err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, "cannot submit the registration request: "+err.Error())
		return
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		sc := readCredentials(s.f)
		_, pending := s.registerRequested()
		if !pending && sc != nil && sc.Registered && (!req.Force || sc.Login != before) {
			admin.WriteJSON(w, http.StatusOK, RegisterResponse{Message: "registered with the Central API as " + sc.Login,
				Status: s.Status()})
			return
		}
		select {
		case <-ctx.Done():
			st := s.Status()
			msg := "registration requested; the leader (" + st.Leader + ") has not completed it yet"
			if st.RegisterError != "" {
				msg += ": " + st.RegisterError
			}
			admin.WriteJSON(w, http.StatusAccepted, RegisterResponse{Message: msg, Status: st})
			return
		case <-t.C:
		}
	}
}
