package lapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"golang.org/x/crypto/bcrypt"
)

// validating applies like cluster.Node: a command that does not validate
// is refused with CodeInvalid before it reaches the FSM.
type validating struct{ direct }

func (v *validating) Apply(ctx context.Context, c fsm.Command) (*fsm.Result, error) {
	if err := c.Validate(); err != nil {
		return &fsm.Result{Code: fsm.CodeOf(err), Message: err.Error()}, nil
	}
	return v.direct.Apply(ctx, c)
}

// FuzzPostAlerts: POST /v1/alerts bodies (alerts, their decisions and
// durations, through the default profiles) from an authenticated agent.
// The handler never panics, answers with CrowdSec's statuses, and never
// stores a decision that expires more than fsm.MaxDecisionTTL ahead.
func FuzzPostAlerts(f *testing.F) {
	clock := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	fs := fsm.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	cfg := DefaultConfig()
	cfg.BcryptCost = 4
	s, err := New(cfg, fs, &validating{direct{f: fs, now: now}}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	s.now = now
	s.OnLeadership(true)
	h := s.Handler()
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), 4)
	if _, err := s.apply(context.Background(), fsm.CmdMachineCreate, fsm.MachineCreate{Machine: fsm.Machine{ID: "agent", PasswordHash: hash, Validated: true, AuthType: fsm.AuthPassword}}); err != nil {
		f.Fatal(err)
	}
	req := httptest.NewRequest("POST", "/v1/watchers/login", strings.NewReader(`{"machine_id":"agent","password":"pw","scenarios":[]}`))
	req.RemoteAddr = "127.0.0.1:4242"
	req.Header.Set("User-Agent", "crowdsec/v1.7.6-test-linux")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var tok struct{ Token string }
	if err := json.Unmarshal(w.Body.Bytes(), &tok); err != nil || tok.Token == "" {
		f.Fatalf("login: %d %s", w.Code, w.Body)
	}

	seed := func(v any) {
		b, _ := json.Marshal(v)
		f.Add(b)
	}
	seed([]any{agentAlert("1.2.3.4", clock)})
	seed([]any{manualAlert("Ip", "1.2.3.4", "ban", "4h", clock), manualAlert("Range", "10.0.0.0/8", "captcha", "99999d", clock)})
	far := manualAlert("Ip", "2.2.2.2", "ban", "1h", clock)
	far["stop_at"] = "9999-12-31T23:59:59Z"
	seed([]any{far})
	seed([]any{manualAlert("Username", "bob", "ban", "-1h", clock), manualAlert("Ip", "::1", "ban", "1d12h", clock)})
	seed([]any{manualAlert("Ip", "1.2.3.999", "ban", "1h", clock)})
	f.Add([]byte(`[{"scenario":"x"}]`))
	f.Add([]byte(`[null]`))
	f.Add([]byte(`{}`))

	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/alerts", bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:4242"
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		req.Header.Set("User-Agent", "crowdsec/v1.7.6-test-linux")
		before, _, _ := fs.Counts(clock)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch w.Code {
		case 201:
			var ids []string
			if err := json.Unmarshal(w.Body.Bytes(), &ids); err != nil {
				t.Fatalf("201 body %q", w.Body)
			}
			if after, _, _ := fs.Counts(clock); after != before+len(ids) {
				t.Fatalf("201 with %d ids, alerts %d -> %d", len(ids), before, after)
			}
		case 400, 500:
			var msg struct{ Message string }
			if err := json.Unmarshal(w.Body.Bytes(), &msg); err != nil || msg.Message == "" {
				t.Fatalf("%d without a message: %q", w.Code, w.Body)
			}
			if after, _, _ := fs.Counts(clock); after != before {
				t.Fatalf("refused push stored alerts: %d -> %d", before, after)
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		limit := clock.UnixNano() + fsm.MaxDecisionTTL
		for _, d := range fs.Decisions(&fsm.DecisionFilter{IncludeSimulated: true, NoDedup: true, IDGt: 0}, clock) {
			if d.Until > limit {
				t.Fatalf("decision %s until %v, past the clamp", d.Value, time.Unix(0, d.Until))
			}
		}
	})
}
