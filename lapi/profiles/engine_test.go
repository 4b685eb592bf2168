package profiles

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/halapi/halapi/lapi/models"
)

func TestDefaultProfiles(t *testing.T) {
	ps, err := Parse(DefaultYAML())
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(ps, nil)

	tests := []struct {
		name    string
		alert   *models.Alert
		want    []string
		matches []string
	}{
		{"ip", agentAlert("Ip", "1.2.3.4", "crowdsecurity/ssh-bf", true),
			[]string{"ban Ip 1.2.3.4 4h crowdsec crowdsecurity/ssh-bf"}, []string{"default_ip_remediation"}},
		{"ipv6", agentAlert("Ip", "2001:db8::1", "crowdsecurity/http-probing", true),
			[]string{"ban Ip 2001:db8::1 4h crowdsec crowdsecurity/http-probing"}, []string{"default_ip_remediation"}},
		{"range", agentAlert("Range", "10.0.0.0/24", "crowdsecurity/ssh-slow-bf", true),
			[]string{"ban Range 10.0.0.0/24 4h crowdsec crowdsecurity/ssh-slow-bf"}, []string{"default_range_remediation"}},
		{"no remediation", agentAlert("Ip", "1.2.3.4", "crowdsecurity/ssh-bf", false), nil, nil},
		{"other scope", agentAlert("username", "root", "crowdsecurity/ssh-bf", true), nil, nil},
		{"country", agentAlert("Country", "FR", "x", true), nil, nil},
		// The LAPI normalises scopes before profiles; a raw lower-case scope does not match.
		{"unnormalised scope", agentAlert("ip", "1.2.3.4", "x", true), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := e.Evaluate(tc.alert, t0)
			if err != nil {
				t.Fatal(err)
			}
			assertDecisions(t, tc.alert.Decisions, tc.want...)
			if got := matchNames(ms); !slices.Equal(got, tc.matches) {
				t.Fatalf("matches = %v, want %v", got, tc.matches)
			}
			for _, d := range tc.alert.Decisions {
				if _, err := uuid.Parse(d.UUID); err != nil {
					t.Fatalf("decision uuid %q: %v", d.UUID, err)
				}
				if d.Simulated != nil {
					t.Fatalf("non-simulated alert produced simulated=%v", *d.Simulated)
				}
			}
		})
	}
}

func TestReferenceFixture(t *testing.T) {
	ps, err := Load("testdata/reference_profiles.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(ps, nil)

	a := agentAlert("Ip", "91.121.79.195", "crowdsecurity/ssh-bf", true)
	ms, err := e.Evaluate(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	assertDecisions(t, a.Decisions, "ban Ip 91.121.79.195 1h crowdsec crowdsecurity/ssh-bf")
	if got := matchNames(ms); !slices.Equal(got, []string{"default_ip_remediation"}) {
		t.Fatalf("matches = %v", got)
	}

	// The custom type/scope profile: continue, then nothing else matches.
	a = agentAlert("username", "bob", "crowdsecurity/ssh-enforce-mfa", true)
	ms, err = e.Evaluate(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	assertDecisions(t, a.Decisions, "enforce_mfa username bob 1h crowdsec crowdsecurity/ssh-enforce-mfa")
	if got := matchNames(ms); !slices.Equal(got, []string{"enforce_mfa"}) {
		t.Fatalf("matches = %v", got)
	}
}

func TestApplyFreshUUIDs(t *testing.T) {
	e := NewEngine(mustParse(t, "filters: [true]\ndecisions: [{type: ban, duration: 1h}, {type: captcha, duration: 1h}]\n"), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	if err := e.Apply(a, t0); err != nil {
		t.Fatal(err)
	}
	b := agentAlert("Ip", "1.2.3.4", "s", true)
	if err := e.Apply(b, t0); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range append(a.Decisions, b.Decisions...) {
		if d.UUID == "" || seen[d.UUID] {
			t.Fatalf("uuid %q empty or reused", d.UUID)
		}
		seen[d.UUID] = true
	}
	if len(seen) != 4 {
		t.Fatalf("got %d uuids", len(seen))
	}
}

// Quirk 1: every true filter appends the decision list again; all filters run.
func TestEveryTrueFilterAppendsDecisions(t *testing.T) {
	e := NewEngine(mustParse(t, `
name: dup
filters:
  - Alert.Remediation == true
  - Alert.GetScope() == "Range"
  - Alert.GetScope() == "Ip"
decisions:
  - type: ban
    duration: 2h
`), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	if err := e.Apply(a, t0); err != nil {
		t.Fatal(err)
	}
	assertDecisions(t, a.Decisions, "ban Ip 1.2.3.4 2h crowdsec s", "ban Ip 1.2.3.4 2h crowdsec s")
	if a.Decisions[0].UUID == a.Decisions[1].UUID || a.Decisions[0] == a.Decisions[1] {
		t.Fatal("duplicated decisions must be distinct objects with distinct uuids")
	}

	// Two templates, two true filters: the list is repeated, in order.
	e = NewEngine(mustParse(t, "filters: [true, true]\ndecisions: [{type: a}, {type: b}]\n"), nil)
	a = agentAlert("Ip", "1.2.3.4", "s", true)
	if err := e.Apply(a, t0); err != nil {
		t.Fatal(err)
	}
	assertDecisions(t, a.Decisions, "a Ip 1.2.3.4 4h crowdsec s", "b Ip 1.2.3.4 4h crowdsec s", "a Ip 1.2.3.4 4h crowdsec s", "b Ip 1.2.3.4 4h crowdsec s")
}

// No short-circuit: a failing filter after a true one still fails the profile.
func TestFiltersNotShortCircuited(t *testing.T) {
	e := NewEngine(mustParse(t, "name: p\nfilters:\n  - true\n  - Alert.Events[5].GetMeta('x') == 'y'\ndecisions: [{type: ban, duration: 1h}]\n"), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	err := e.Apply(a, t0)
	if err == nil || !strings.HasPrefix(err.Error(), "while running expression Alert.Events[5].GetMeta('x') == 'y': ") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("multi-line error %q", err)
	}
	if len(a.Decisions) != 0 {
		t.Fatal("decisions attached despite the error")
	}
}

func TestNonBoolResultAtRuntime(t *testing.T) {
	// Flatten is untyped, so the result type is only known at run time.
	e := NewEngine(mustParse(t, "name: p\nfilters:\n  - Flatten(Alert.GetValue())[0]\n"), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	err := e.Apply(a, t0)
	want := "unexpected type string (1.2.3.4) while running 'Flatten(Alert.GetValue())[0]'"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
}

// Quirk 2: only the first matching profile that yields decisions sets them;
// every matching profile (until a break) is reported for notifications.
func TestFirstProfileWithDecisionsWins(t *testing.T) {
	e := NewEngine(mustParse(t, `
name: notify_only
filters: [Alert.GetScope() == "Ip"]
notifications: [slack_default]
---
name: no_match
filters: [Alert.GetScope() == "Range"]
decisions: [{type: ban, duration: 9h}]
---
name: first
filters: [Alert.Remediation]
decisions: [{type: captcha, duration: 1h}]
---
name: second
filters: [true]
decisions: [{type: ban, duration: 2h}]
on_success: break
---
name: after_break
filters: [true]
decisions: [{type: ban, duration: 3h}]
`), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	ms, err := e.Evaluate(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	assertDecisions(t, a.Decisions, "captcha Ip 1.2.3.4 1h crowdsec s")
	if got := matchNames(ms); !slices.Equal(got, []string{"notify_only", "first", "second"}) {
		t.Fatalf("matches = %v", got)
	}
	if ms[0].Index != 0 || ms[1].Index != 2 || ms[2].Index != 3 {
		t.Fatalf("indexes = %d %d %d", ms[0].Index, ms[1].Index, ms[2].Index)
	}
	// The notification copies reflect the alert at match time.
	if len(ms[0].Alert.Decisions) != 0 || len(ms[1].Alert.Decisions) != 1 || len(ms[2].Alert.Decisions) != 1 {
		t.Fatalf("notification copies have %d/%d/%d decisions",
			len(ms[0].Alert.Decisions), len(ms[1].Alert.Decisions), len(ms[2].Alert.Decisions))
	}
	if !slices.Equal(ms[0].Profile.Notifications, []string{"slack_default"}) {
		t.Fatal("profile notifications not exposed")
	}
}

func TestOnSuccessContinueDefault(t *testing.T) {
	e := NewEngine(mustParse(t, "name: a\nfilters: [true]\n---\nname: b\nfilters: [true]\non_success: continue\n---\nname: c\nfilters: [true]\n"), nil)
	ms, err := e.Evaluate(agentAlert("Ip", "1.2.3.4", "s", true), t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := matchNames(ms); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("matches = %v", got)
	}
}

// Quirk 3a: on_failure is validated but has no effect.
func TestOnFailureHasNoEffect(t *testing.T) {
	for _, of := range []string{"break", "apply", "continue"} {
		e := NewEngine(mustParse(t, "name: a\nfilters: [false]\ndecisions: [{type: ban}]\non_failure: "+of+"\n---\nname: b\nfilters: [true]\ndecisions: [{type: captcha, duration: 1h}]\n"), nil)
		a := agentAlert("Ip", "1.2.3.4", "s", true)
		ms, err := e.Evaluate(a, t0)
		if err != nil {
			t.Fatal(err)
		}
		assertDecisions(t, a.Decisions, "captcha Ip 1.2.3.4 1h crowdsec s")
		if got := matchNames(ms); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("on_failure %s: matches = %v", of, got)
		}
	}
}

// Quirk 3b: on_error variants.
func TestOnError(t *testing.T) {
	const failing = "Alert.Events[3].Timestamp == nil" // index out of range at run time
	prof := func(onError string) string {
		return "name: failing\nfilters: [\"" + failing + "\"]\ndecisions: [{type: ban, duration: 9h}]\non_error: " + onError +
			"\non_success: break\n---\nname: next\nfilters: [true]\ndecisions: [{type: captcha, duration: 1h}]\n"
	}
	tests := []struct {
		onError   string
		wantErr   bool
		decisions []string
		matches   []string
	}{
		{"", true, nil, nil},
		{"fail", true, nil, nil},
		{"Continue", true, nil, nil}, // values are case-sensitive
		{"continue", false, []string{"captcha Ip 1.2.3.4 1h crowdsec s"}, []string{"next"}},
		{"ignore", false, []string{"captcha Ip 1.2.3.4 1h crowdsec s"}, []string{"next"}},
		// break behaves like continue: the failed profile did not match.
		{"break", false, []string{"captcha Ip 1.2.3.4 1h crowdsec s"}, []string{"next"}},
		// apply: matched with no decisions (notify), then on_success: break stops.
		{"apply", false, nil, []string{"failing"}},
	}
	for _, tc := range tests {
		t.Run("on_error="+tc.onError, func(t *testing.T) {
			e := NewEngine(mustParse(t, prof(tc.onError)), nil)
			a := agentAlert("Ip", "1.2.3.4", "s", true)
			ms, err := e.Evaluate(a, t0)
			if tc.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), "while running expression "+failing+": ") {
					t.Fatalf("err = %v", err)
				}
				if ms != nil || a.Decisions != nil {
					t.Fatal("alert modified or matches returned on error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			assertDecisions(t, a.Decisions, tc.decisions...)
			if got := matchNames(ms); !slices.Equal(got, tc.matches) {
				t.Fatalf("matches = %v, want %v", got, tc.matches)
			}
		})
	}
}

// When a filter is true before a later one fails, the reference keeps
// matched=true (decisions dropped): on_error break then really breaks and
// continue/ignore still notify.
func TestOnErrorAfterTrueFilter(t *testing.T) {
	for _, tc := range []struct {
		onError string
		matches []string
	}{
		{"break", []string{"failing"}},
		{"continue", []string{"failing", "next"}},
		{"ignore", []string{"failing", "next"}},
	} {
		e := NewEngine(mustParse(t, "name: failing\nfilters: [true, \"Alert.Events[3] == nil\"]\ndecisions: [{type: ban}]\non_error: "+tc.onError+
			"\n---\nname: next\nfilters: [true]\ndecisions: [{type: captcha, duration: 1h}]\n"), nil)
		a := agentAlert("Ip", "1.2.3.4", "s", true)
		ms, err := e.Evaluate(a, t0)
		if err != nil {
			t.Fatal(err)
		}
		if got := matchNames(ms); !slices.Equal(got, tc.matches) {
			t.Fatalf("on_error %s: matches = %v, want %v", tc.onError, got, tc.matches)
		}
		if tc.onError == "break" && len(a.Decisions) != 0 {
			t.Fatalf("on_error break: decisions %v", summaries(a.Decisions))
		}
		if tc.onError != "break" {
			assertDecisions(t, a.Decisions, "captcha Ip 1.2.3.4 1h crowdsec s")
		}
	}
}

// A fatal error after an earlier profile attached decisions leaves the alert as it was.
func TestFatalErrorRestoresAlert(t *testing.T) {
	e := NewEngine(mustParse(t, "name: a\nfilters: [true]\ndecisions: [{type: ban, duration: 1h}]\n---\nname: b\nfilters: [\"Alert.Events[0] == nil\"]\n"), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	if err := e.Apply(a, t0); err == nil {
		t.Fatal("expected error")
	}
	if a.Decisions != nil {
		t.Fatalf("decisions = %v, want none", summaries(a.Decisions))
	}
	a.Decisions = []*models.Decision{}
	if err := e.Apply(a, t0); err == nil || a.Decisions == nil || len(a.Decisions) != 0 {
		t.Fatalf("err %v, decisions = %v, want the original empty list", err, a.Decisions)
	}
}

// Quirk 5 and the other template fields.
func TestTemplateFields(t *testing.T) {
	e := NewEngine(mustParse(t, `
name: p
filters: [true]
decisions:
  - type: ban
    scope: ip
    duration: 1d12h
  - type: captcha
    scope: custom_app1_captcha
    origin: myapp
  - type: throttle
    simulated: true
    origin: ""
    value: "6.6.6.6"
    scenario: "other"
    uuid: "fixed"
`), nil)
	a := agentAlert("Ip", "1.2.3.4", "crowdsecurity/ssh-bf", true)
	if err := e.Apply(a, t0); err != nil {
		t.Fatal(err)
	}
	assertDecisions(t, a.Decisions,
		"ban ip 1.2.3.4 1d12h crowdsec crowdsecurity/ssh-bf",                         // scope not normalised
		"captcha custom_app1_captcha 1.2.3.4 4h crowdsec/myapp crowdsecurity/ssh-bf", // missing duration -> 4h
		"throttle Ip 1.2.3.4 4h crowdsec/ crowdsecurity/ssh-bf sim",                  // value/scenario/uuid ignored
	)
	if a.Decisions[2].UUID == "fixed" {
		t.Fatal("template uuid used")
	}

	// A simulated alert gives simulated decisions.
	a = agentAlert("Ip", "1.2.3.4", "s", true)
	a.Simulated = models.Bool(true)
	if err := e.Apply(a, t0); err != nil {
		t.Fatal(err)
	}
	for _, d := range a.Decisions {
		if d.Simulated == nil || !*d.Simulated {
			t.Fatalf("decision %s not simulated", decisionSummary(d))
		}
	}
}

func TestNotificationOnlyProfile(t *testing.T) {
	e := NewEngine(mustParse(t, `
name: country_notif
filters: [Alert.GetScope() == "Country"]
notifications: [email_default]
on_success: break
---
name: fallback
filters: [true]
decisions: [{type: ban, duration: 1h}]
`), nil)
	a := agentAlert("Country", "FR", "s", true)
	ms, err := e.Evaluate(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Decisions) != 0 || !slices.Equal(matchNames(ms), []string{"country_notif"}) {
		t.Fatalf("decisions %v matches %v", summaries(a.Decisions), matchNames(ms))
	}
}

// §2.2: alerts that already carry decisions are only evaluated for notifications.
func TestAlertWithDecisionsUnchanged(t *testing.T) {
	e := NewEngine(mustParse(t, `
name: broken
filters: ["Alert.Events[9] == nil"]
decisions: [{type: ban, duration: 9h}]
---
name: all
filters: [true]
decisions: [{type: captcha, duration: 1h}]
---
name: ip
filters: [Alert.GetScope() == "Ip"]
decisions: [{type: ban, duration: 2h}]
on_success: break
---
name: after_break
filters: [true]
`), nil)
	a := agentAlert("Ip", "1.2.3.4", "cscli", false)
	manual := &models.Decision{
		Duration: models.Str("24h"), Origin: models.Str("cscli"), Scenario: models.Str("manual 'ban' from 'x'"),
		Scope: models.Str("Ip"), Type: models.Str("ban"), Value: models.Str("1.2.3.4"), UUID: "manual-uuid",
	}
	a.Decisions = []*models.Decision{manual}
	before := *manual

	ms, err := e.Evaluate(a, t0)
	if err != nil {
		t.Fatalf("errors must be skipped for alerts with decisions: %v", err)
	}
	if len(a.Decisions) != 1 || a.Decisions[0] != manual || *manual != before {
		t.Fatalf("decisions changed: %v", summaries(a.Decisions))
	}
	if got := matchNames(ms); !slices.Equal(got, []string{"all", "ip"}) {
		t.Fatalf("matches = %v", got)
	}
	if err := e.Apply(a, t0); err != nil || len(a.Decisions) != 1 {
		t.Fatalf("Apply: %v, %d decisions", err, len(a.Decisions))
	}
}

func TestDurationExprEscalation(t *testing.T) {
	store := &fakeStore{}
	e := NewEngine(mustParse(t, `
name: escalate
filters: [Alert.Remediation == true && Alert.GetScope() == "Ip"]
decisions: [{type: ban, duration: 4h}]
duration_expr: Sprintf('%dh', (GetDecisionsCount(Alert.GetValue()) + 1) * 4)
on_success: break
`), store)

	apply := func(ip string) string {
		t.Helper()
		a := agentAlert("Ip", ip, "s", true)
		if err := e.Apply(a, t0); err != nil {
			t.Fatal(err)
		}
		if len(a.Decisions) != 1 {
			t.Fatalf("%d decisions", len(a.Decisions))
		}
		return *a.Decisions[0].Duration
	}

	if got := apply("1.2.3.4"); got != "4h" {
		t.Fatalf("first ban = %s, want 4h", got)
	}
	store.add("1.2.3.4", t0.Add(-time.Hour), 4*time.Hour)
	if got := apply("1.2.3.4"); got != "8h" {
		t.Fatalf("second ban = %s, want 8h", got)
	}
	// Expired decisions count too; a covering range counts; other IPs are unaffected.
	store.add("1.2.3.4", t0.Add(-48*time.Hour), time.Hour)
	store.add("1.2.3.0/24", t0.Add(-time.Hour), time.Hour)
	if got := apply("1.2.3.4"); got != "16h" {
		t.Fatalf("fourth ban = %s, want 16h", got)
	}
	if got := apply("1.2.3.5"); got != "8h" {
		t.Fatalf("neighbour ban = %s, want 8h", got)
	}
	if got := apply("5.6.7.8"); got != "4h" {
		t.Fatalf("unrelated ban = %s, want 4h", got)
	}

	// With no store the helpers return 0.
	e2 := NewEngine(e.Profiles(), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	if err := e2.Apply(a, t0); err != nil || *a.Decisions[0].Duration != "4h" {
		t.Fatalf("nil store: %v %v", err, summaries(a.Decisions))
	}
}

func TestDurationExprFallbacks(t *testing.T) {
	tests := []struct {
		name, expr, want string
	}{
		{"duration value", `duration("90m")`, "1h30m0s"},
		{"day prefix", `"2d"`, "2d"},
		{"not a duration", `"forever"`, "3h"},
		{"number", `42`, "3h"},
		{"runtime error", `Alert.Events[4].GetMeta("x")`, "3h"},
		{"time left", `GetActiveDecisionsTimeLeft(Alert.GetValue()) + duration("1h")`, "1h0m0s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEngine(mustParse(t, "name: p\nfilters: [true]\ndecisions: [{type: ban, duration: 3h}]\nduration_expr: '"+strings.ReplaceAll(tc.expr, "'", "''")+"'\n"), nil)
			a := agentAlert("Ip", "1.2.3.4", "s", true)
			if err := e.Apply(a, t0); err != nil {
				t.Fatal(err)
			}
			if got := *a.Decisions[0].Duration; got != tc.want {
				t.Fatalf("duration = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDebugAndLogInfo(t *testing.T) {
	var buf bytes.Buffer
	e := NewEngine(mustParse(t, "name: dbg\ndebug: true\nfilters: ['LogInfo(\"seen %s\", Alert.GetValue())']\n"), nil)
	e.SetLogger(slog.New(slog.NewTextHandler(&buf, nil)))
	if err := e.Apply(agentAlert("Ip", "1.2.3.4", "s", true), t0); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "seen 1.2.3.4") || !strings.Contains(out, "profile=dbg") {
		t.Fatalf("log output %q", out)
	}
}

func TestEmptyFiltersNeverMatch(t *testing.T) {
	e := NewEngine(mustParse(t, "name: nofilter\ndecisions: [{type: ban, duration: 1h}]\n---\nname: other\nfilters: []\n"), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	ms, err := e.Evaluate(a, t0)
	if err != nil || len(ms) != 0 || len(a.Decisions) != 0 {
		t.Fatalf("err %v, matches %v, decisions %v", err, matchNames(ms), summaries(a.Decisions))
	}
}

func TestDurationExprWithoutTemplateDuration(t *testing.T) {
	e := NewEngine(mustParse(t, "name: p\nfilters: [true]\nduration_expr: \"'nope'\"\ndecisions: [{type: ban}]\n"), nil)
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	if err := e.Apply(a, t0); err != nil {
		t.Fatal(err)
	}
	assertDecisions(t, a.Decisions, "ban Ip 1.2.3.4 4h crowdsec s")
}
