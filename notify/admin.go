package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/halapi/halapi/admin"
	"io"
	"net/http"
	"regexp"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
)

// Service is what the admin routes show: every config (used or not), the
// profiles' notification names, the replicated cursors and, on the leader,
// the live dispatch state.
type Service struct {
	// Configs returns every notification config (not only those the
	// profiles use) and the parse warnings.
	Configs func() ([]*Config, []string, error)
	// ProfileNames returns the notification names the profiles in force
	// list (they change with `halapi profiles apply`).
	ProfileNames func() []string
	Dispatcher   *Dispatcher
	Store        interface {
		NotifyState(name string) (fsm.NotifyState, bool)
	}
	Plugins PluginOptions
	// Metrics are the dispatcher's (registered even without one).
	Metrics *Metrics
}

// View is one notification as `halapi notifications list|inspect` show it.
type View struct {
	Name     string         `json:"name"`
	Type     string         `json:"type"`
	File     string         `json:"file"`
	Active   bool           `json:"active"` // listed by a profile
	Binary   string         `json:"binary"`
	BinaryOK bool           `json:"binary_ok"`
	BinError string         `json:"binary_error,omitempty"`
	Format   string         `json:"format,omitempty"`
	Wait     string         `json:"group_wait,omitempty"`
	Thresh   int            `json:"group_threshold,omitempty"`
	MaxRetry uint           `json:"max_retry,omitempty"`
	Timeout  string         `json:"timeout"`
	Plugin   map[string]any `json:"plugin_config,omitempty"`
	// Replicated (the same on every node).
	Cursor    int64      `json:"cursor"`
	Sent      int64      `json:"sent"`
	Lost      int64      `json:"lost"`
	Batches   int64      `json:"batches"`
	LastSent  *time.Time `json:"last_sent,omitempty"`
	LastError string     `json:"last_error,omitempty"`
	// Leader only.
	Live *Live `json:"live,omitempty"`
}

// ListView is the answer of GET /admin/v1/notifications.
type ListView struct {
	Running       bool       `json:"running"` // this node runs the plugins
	RunningSince  *time.Time `json:"running_since,omitempty"`
	Warnings      []string   `json:"warnings,omitempty"`
	Missing       []string   `json:"missing,omitempty"` // listed by profiles, not configured
	Notifications []View     `json:"notifications"`
}

var secretKey = regexp.MustCompile(`(?i)(pass|secret|token|api_?key|auth|webhook|dsn|shared_key)`)

// maskSecrets hides the values of keys that usually hold credentials
// (the admin socket is root-only, but outputs get pasted into tickets).
func maskSecrets(v any, key string) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			out[k] = maskSecrets(e, k)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = maskSecrets(e, key)
		}
		return out
	case nil:
		return nil
	}
	if key != "" && secretKey.MatchString(key) {
		return "********"
	}
	return v
}

func (s *Service) view(c *Config, active bool) View {
	v := View{Name: c.Name, Type: c.Type, File: c.File, Active: active, Binary: s.Plugins.BinaryPath(c.Type),
		Format: c.Format, Thresh: c.GroupThreshold, MaxRetry: c.MaxRetry, Timeout: c.Timeout.String()}
	if c.GroupWait > 0 {
		v.Wait = c.GroupWait.String()
	}
	if err := CheckBinary(v.Binary); err != nil {
		v.BinError = err.Error()
	} else {
		v.BinaryOK = true
	}
	if m, ok := maskSecrets(c.Plugin, "").(map[string]any); ok && len(m) > 0 {
		v.Plugin = m
	}
	if st, ok := s.Store.NotifyState(c.Name); ok {
		v.Cursor, v.Sent, v.Lost, v.Batches, v.LastError = st.Cursor, st.Sent, st.Lost, st.Batches, st.LastError
		if st.LastSent != 0 {
			t := time.Unix(0, st.LastSent).UTC()
			v.LastSent = &t
		}
	}
	if s.Dispatcher != nil {
		if l, ok := s.Dispatcher.LiveState(c.Name); ok {
			v.Live = &l
		}
	}
	return v
}

func (s *Service) list() (ListView, []*Config, error) {
	cfgs, warnings, err := s.Configs()
	if err != nil {
		return ListView{}, nil, err
	}
	lv := ListView{Warnings: warnings, Notifications: []View{}}
	if s.Dispatcher != nil {
		if on, since := s.Dispatcher.Active(); on {
			lv.Running, lv.RunningSince = true, &since
		}
	}
	var names []string
	if s.ProfileNames != nil {
		names = s.ProfileNames()
	}
	used := map[string]bool{}
	for _, n := range names {
		used[n] = true
	}
	have := map[string]bool{}
	for _, c := range cfgs {
		have[c.Name] = true
		lv.Notifications = append(lv.Notifications, s.view(c, used[c.Name]))
	}
	for _, n := range names {
		if !have[n] {
			lv.Missing = append(lv.Missing, n)
		}
	}
	sort.Slice(lv.Notifications, func(i, j int) bool { return lv.Notifications[i].Name < lv.Notifications[j].Name })
	return lv, cfgs, nil
}

// AdminRoutes serves /notifications (list), /{name} (inspect)
// and POST /{name}/test.
func (s *Service) AdminRoutes(r *mux.Router) {
	r.HandleFunc("/notifications", func(w http.ResponseWriter, _ *http.Request) {
		lv, _, err := s.list()
		if err != nil {
			admin.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		admin.WriteJSON(w, http.StatusOK, lv)
	}).Methods("GET")
	r.HandleFunc("/notifications/{name}", func(w http.ResponseWriter, r *http.Request) {
		lv, _, err := s.list()
		if err != nil {
			admin.WriteError(w, http.StatusInternalServerError, err.Error())
			return
		}
		name := mux.Vars(r)["name"]
		for _, v := range lv.Notifications {
			if v.Name == name {
				admin.WriteJSON(w, http.StatusOK, v)
				return
			}
		}
		admin.WriteError(w, http.StatusNotFound, fmt.Sprintf("notification '%s' not found", name))
	}).Methods("GET")
	r.HandleFunc("/notifications/{name}/test", s.test).Methods("POST")
}

// TestRequest optionally replaces the sample alert of a test.
type TestRequest struct {
	Alert *models.Alert `json:"alert,omitempty"`
}

// TestResult is the answer of a test.
type TestResult struct {
	Name    string `json:"name"`
	Plugin  string `json:"plugin"` // "running" (the leader's) or "started for the test"
	Message string `json:"message"`
}

// SampleAlert is the alert a test sends, like cscli's.
func SampleAlert(now time.Time) *models.Alert {
	ts := now.UTC().Format(time.RFC3339)
	return &models.Alert{
		Capacity: models.Int32(0), EventsCount: models.Int32(1), Leakspeed: models.Str("0"),
		Message: models.Str("test alert"), Scenario: models.Str("test alert"), ScenarioHash: models.Str(""),
		ScenarioVersion: models.Str(""), Simulated: models.Bool(false), StartAt: &ts, StopAt: &ts, CreatedAt: ts,
		UUID: uuid.NewString(), MachineID: "halapi-notifications-test",
		Source:    &models.Source{Scope: models.Str(models.ScopeIP), Value: models.Str("127.0.0.1"), IP: "127.0.0.1"},
		Decisions: []*models.Decision{}, Events: []*models.Event{},
	}
}

func (s *Service) test(w http.ResponseWriter, r *http.Request) {
	name := mux.Vars(r)["name"]
	var req TestRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		admin.WriteError(w, http.StatusBadRequest, "test: "+err.Error())
		return
	}
	_, cfgs, err := s.list()
	if err != nil {
		admin.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	var cfg *Config
	for _, c := range cfgs {
		if c.Name == name {
			cfg = c
		}
	}
	if cfg == nil {
		admin.WriteError(w, http.StatusNotFound, fmt.Sprintf("notification '%s' not found", name))
		return
	}
	alert := req.Alert
	if alert == nil {
		alert = SampleAlert(time.Now())
	}
	ctx, cancel := context.WithTimeout(r.Context(), cfg.Timeout+70*time.Second)
	defer cancel()
	res := TestResult{Name: name, Plugin: "running"}
	var n Notifier
	if s.Dispatcher != nil {
		n, _ = s.Dispatcher.Notifier(name)
	}
	if n == nil {
		res.Plugin = "started for the test"
		p, err := StartPlugins(ctx, s.Plugins, []*Config{cfg})
		if err != nil {
			admin.WriteError(w, http.StatusBadGateway, "test: "+err.Error())
			return
		}
		defer p.Close()
		n, _ = p.Notifier(name)
	}
	if err := Test(ctx, cfg, n, alert); err != nil {
		admin.WriteError(w, http.StatusBadGateway, fmt.Sprintf("test of '%s' failed: %v", name, err))
		return
	}
	res.Message = fmt.Sprintf("notification '%s' sent: the plugin accepted the test alert", name)
	admin.WriteJSON(w, http.StatusOK, res)
}
