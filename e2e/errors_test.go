package e2e

import (
	"context"
	"testing"

	"github.com/go-openapi/strfmt"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// TestWatcherErrors checks the login failures real agents and cscli see.
func TestWatcherErrors(t *testing.T) {
	s := StartServer(t)
	const (
		machine  = "agent-err"
		password = "e2e-agent-err-password-0123456789"
	)
	addMachine(t, s, machine, password)

	login := func(id, pw string) (int, error) {
		c := newWatcher(t, s, id, pw)
		return call("Auth.AuthenticateWatcher", func(ctx context.Context) (int, error) {
			p := strfmt.Password(pw)
			m := id
			_, resp, err := c.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{MachineID: &m, Password: &p, Scenarios: testScenarios})
			return statusOf(resp), err
		})
	}

	if code, err := login(machine, password); err != nil || code != 200 {
		t.Fatalf("login with the right password: status %d, err %v", code, err)
	}

	code, err := login(machine, "not-the-password")
	if err == nil || code != 401 {
		t.Fatalf("login with a wrong password: status %d, err %v; want 401", code, err)
	}
	if msg := apiErrorMessage(err); msg != "incorrect Username or Password" {
		t.Errorf("wrong password: message %q, want \"incorrect Username or Password\"", msg)
	}

	if code, err := login("no-such-machine", password); err == nil || code != 401 {
		t.Fatalf("login of an unknown machine: status %d, err %v; want 401", code, err)
	}

	// An agent with a wrong password fails its calls (after the client's own
	// re-login attempts) instead of hanging.
	bad := newWatcher(t, s, machine, "not-the-password")
	_, err = call("Alerts.List with a wrong password", func(ctx context.Context) (*models.GetAlertsResponse, error) {
		r, _, err := bad.Alerts.List(ctx, apiclient.AlertsListOpts{})
		return r, err
	})
	if !errContains(err, "incorrect Username or Password") {
		t.Fatalf("alerts list with a wrong password: err %v, want the login refusal", err)
	}
}

// TestHealthMeansReady checks the serve contract "GET /health answers 200
// {"status":"up"} once ready": the first client request right after /health
// said up must succeed, on a fresh data dir (a registration, then a login) and
// after a crash and restart (a login: what an agent does first).
func TestHealthMeansReady(t *testing.T) {
	const (
		machine  = "early-agent"
		password = "e2e-early-agent-password-0123456789"
	)
	s := StartServer(t)

	if err := registerWatcher(t, s, machine, password); err != nil {
		t.Fatalf("first write right after /health said up (fresh data dir): POST /v1/watchers: %v", err)
	}
	s.MustCLI("machines", "validate", machine)
	loginToken(t, s, machine, password)

	s.Kill()
	s.Start()

	loginToken(t, s, machine, password)
	if err := registerWatcher(t, s, "early-agent-2", password); err != nil {
		t.Fatalf("write right after /health said up (restart): POST /v1/watchers: %v", err)
	}
}
