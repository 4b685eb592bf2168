package lapi

import (
	"slices"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
	"github.com/halapi/halapi/lapi/profiles"
)

// The notifications stored with an alert are those of every matching
// profile, once each, marked when the profile matched before another gave
// the alert its decisions (the copy the reference hands its plugins).
func TestNotifyListFromProfiles(t *testing.T) {
	profs, err := profiles.Parse([]byte(`name: notify_first
filters: ["Alert.GetScenario() == 'ssh-bf'"]
notifications: [http_default]
on_success: continue
---
name: ban
filters: ["Alert.Remediation == true"]
decisions:
  - type: ban
    duration: 4h
notifications: [slack_default, http_default]
on_success: break
---
name: never
filters: ["true"]
notifications: [email_default]
`))
	if err != nil {
		t.Fatal(err)
	}
	eng := profiles.NewEngine(profs, nil)
	a := &models.Alert{Scenario: models.Str("ssh-bf"), Remediation: true,
		Source: &models.Source{Scope: models.Str("Ip"), Value: models.Str("1.2.3.4")}}
	ms, err := eng.Evaluate(a, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	got := notifyList(ms)
	want := []fsm.AlertNotify{{Name: "http_default", NoDecisions: true}, {Name: "slack_default"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
	if got := notifyList(nil); got != nil {
		t.Fatalf("no match: %+v", got)
	}
}

// A decision added by hand goes through the profiles for notifications,
// as cscli's does in the reference.
func TestManualDecisionNotifies(t *testing.T) {
	e := newEnv(t)
	profs, err := profiles.Parse([]byte(`name: notify_manual
filters: ["Alert.GetScope() == 'Ip' && len(Alert.Decisions) > 0 && Alert.Decisions[0].Origin == 'cscli'"]
notifications: [slack_default]
`))
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetLocalProfiles(&LocalProfiles{Source: ProfilesFile, Explicit: true, profs: profs})
	r := e.doAdmin("POST", "/admin/v1/decisions", AddDecisionRequest{Value: "192.0.2.7", Scope: "Ip"})
	if r.code != 201 {
		t.Fatalf("add: %d %s", r.code, r.body)
	}
	a := e.fsm.Alert(e.fsm.LastAlertID())
	if a == nil || !slices.Equal(a.Notify, []fsm.AlertNotify{{Name: "slack_default"}}) {
		t.Fatalf("stored alert %+v", a)
	}
}
