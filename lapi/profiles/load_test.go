package profiles

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestParseFields(t *testing.T) {
	ps := mustParse(t, `
name: p1
debug: true
filters:
  - Alert.Remediation == true
  - Alert.GetScope() == "Ip"
decisions:
  - type: captcha
    duration: 1h
    scope: custom_app1_captcha
  - type: ban
    origin: myorigin
    simulated: true
    id: 12
    until: "x"
    uuid: "u"
    value: "1.2.3.4"
    scenario: "ignored"
duration_expr: Sprintf('%dh', 2)
on_success: break
on_failure: apply
on_error: whatever
notifications:
  - slack_default
  - http_default
`)
	if len(ps) != 1 {
		t.Fatalf("got %d profiles", len(ps))
	}
	p := ps[0]
	if p.Name != "p1" || !p.Debug || len(p.Filters) != 2 || p.DurationExpr == "" ||
		p.OnSuccess != "break" || p.OnFailure != "apply" || p.OnError != "whatever" ||
		!slices.Equal(p.Notifications, []string{"slack_default", "http_default"}) {
		t.Fatalf("unexpected profile %+v", p)
	}
	want := []DecisionTemplate{
		{Type: "captcha", Duration: "1h", Scope: "custom_app1_captcha"},
		{Type: "ban", Duration: DefaultDuration, Origin: "myorigin", HasOrigin: true, Simulated: true},
	}
	if !slices.Equal(p.Decisions, want) {
		t.Fatalf("decisions = %+v, want %+v", p.Decisions, want)
	}
}

func TestDefaultYAML(t *testing.T) {
	ps, err := Parse(DefaultYAML())
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 2 || ps[0].Name != "default_ip_remediation" || ps[1].Name != "default_range_remediation" {
		t.Fatalf("unexpected default profiles: %d", len(ps))
	}
	for _, p := range ps {
		if p.OnSuccess != "break" || len(p.Decisions) != 1 || p.Decisions[0] != (DecisionTemplate{Type: "ban", Duration: "4h"}) ||
			p.DurationExpr != "" || len(p.Notifications) != 0 || len(p.Filters) != 1 {
			t.Fatalf("unexpected default profile %+v", p)
		}
	}
	// DefaultYAML returns a copy.
	b := DefaultYAML()
	b[0] = 'X'
	if DefaultYAML()[0] == 'X' {
		t.Fatal("DefaultYAML exposes the embedded bytes")
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"zero profiles loaded for LAPI"}},
		{"comments only", "# nothing\n", []string{"zero profiles loaded for LAPI"}},
		{"only separators", "---\n---\n", []string{"zero profiles loaded for LAPI"}},
		{"unknown key", "name: p1\nfilter:\n  - true\n", []string{`profile "p1"`, `unknown key "filter"`, "line 2"}},
		{"unknown decision key", "name: p1\nfilters: [true]\ndecisions:\n  - type: ban\n    durations: 1h\n", []string{`profile "p1"`, `unknown key "durations"`}},
		{"second document", "name: ok\nfilters: [true]\n---\nname: p2\nbogus: 1\n", []string{"document 2", `profile "p2"`, `unknown key "bogus"`}},
		{"bad yaml", "name: [\n", []string{"document 1"}},
		{"wrong type", "name: p1\nfilters: Alert.Remediation\n", []string{`profile "p1"`, "cannot unmarshal"}},
		{"bad on_success", "name: p1\non_success: stop\n", []string{`profile "p1"`, `invalid on_success "stop"`}},
		{"bad on_failure", "name: p1\non_failure: ignore\n", []string{`profile "p1"`, `invalid on_failure "ignore"`}},
		{"bad duration", "name: p1\nfilters: [true]\ndecisions:\n  - type: ban\n    duration: 4 hours\n", []string{`profile "p1"`, `decision 1: invalid duration "4 hours"`}},
		{"empty duration", "name: p1\ndecisions:\n  - type: ban\n    duration: \"\"\n", []string{`profile "p1"`, `invalid duration ""`}},
		{"missing type", "name: p1\ndecisions:\n  - duration: 1h\n", []string{`profile "p1"`, "decision 1: missing type"}},
		{"compile error", "name: p1\nfilters:\n  - Alert.Remediation == true\n  - Alert.Nope == 1\n", []string{`profile "p1"`, `filter 2 "Alert.Nope == 1"`, "Nope"}},
		{"syntax error", "name: p1\nfilters:\n  - Alert.GetScope() ==\n", []string{`profile "p1"`, "filter 1"}},
		{"unknown function", "name: p1\nfilters:\n  - Frobnicate(Alert.GetValue())\n", []string{`profile "p1"`, "Frobnicate"}},
		{"non-bool filter", "name: p1\nfilters:\n  - Alert.GetScope()\n", []string{`profile "p1"`, "expected bool"}},
		{"helper type check", "name: p1\nfilters:\n  - GetDecisionsCount(1) > 0\n", []string{`profile "p1"`, "filter 1"}},
		{"duration_expr compile error", "name: p1\nduration_expr: Sprintf(\nfilters: [true]\n", []string{`profile "p1"`, "duration_expr"}},
		{"unnamed profile", "filters:\n  - nope\n", []string{"document 1", "filter 1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("expected an error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

// A duration_expr makes the reference skip the template duration check.
func TestTemplateDurationNotCheckedWithDurationExpr(t *testing.T) {
	ps := mustParse(t, "name: p\nfilters: [true]\nduration_expr: \"'2h'\"\ndecisions:\n  - type: ban\n    duration: zz\n")
	if ps[0].Decisions[0].Duration != "zz" {
		t.Fatalf("duration = %q", ps[0].Decisions[0].Duration)
	}
}

// Documented patterns (spec §5) must compile.
func TestDocumentedPatternsCompile(t *testing.T) {
	for _, f := range []string{
		`Alert.Remediation == true && Alert.GetScope() == "Ip"`,
		`Alert.Remediation == true && Alert.GetScope() == "Session"`,
		`Alert.Remediation == true && Alert.GetScope() == "Ip" && Alert.GetScenario() in ["crowdsecurity/ssh-bf", "crowdsecurity/ssh-user-enum"]`,
		`Alert.GetScope() == "Country"`,
		`GetDecisionsSinceCount(Alert.GetValue(), "7h") > 2`,
		`any(Alert.Events, {.GetMeta("target_fqdn") == "x"})`,
		`Alert.Scenario == "crowdsecurity/ssh-bf"`,
		`Alert.Source.GetValue() startsWith "192.168." || Alert.Source.GetAsNumberName() contains "OVH"`,
		`IpInRange(Alert.GetValue(), "10.0.0.0/8") && !IsIPV6(Alert.GetValue())`,
		`GetActiveDecisionsTimeLeft(Alert.GetValue()) > duration("1h")`,
		`LogInfo("alert %s", Alert.GetValue())`,
		`Alert.GetMeta("service") == "ssh" && Alert.GetEventsCount() > 3 && Alert.MachineID != ""`,
	} {
		if _, err := compile(f, true); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := compile(`Sprintf('%dh', (GetDecisionsCount(Alert.GetValue()) + 1) * 4)`, false); err != nil {
		t.Error(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLoadLocalOverlay(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "profiles.yaml")
	writeFile(t, path, "name: base1\nfilters: [true]\n---\nname: base2\nfilters: [false]\n")

	ps, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	names := func(ps []*Profile) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Name)
		}
		return out
	}
	if got := names(ps); !slices.Equal(got, []string{"base1", "base2"}) {
		t.Fatalf("without overlay: %v", got)
	}

	// The overlay's documents come first; nothing is merged (same name twice is fine).
	writeFile(t, path+".local", "name: local1\nfilters: [true]\n---\nname: base1\nfilters: [false]\n")
	ps, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(ps); !slices.Equal(got, []string{"local1", "base1", "base1", "base2"}) {
		t.Fatalf("with overlay: %v", got)
	}

	// Evaluation order follows: the overlay profile matches first.
	writeFile(t, path+".local", "name: local1\nfilters: [true]\ndecisions: [{type: captcha, duration: 1m}]\non_success: break\n")
	ps, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	ms, err := NewEngine(ps, nil).Evaluate(a, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(matchNames(ms), []string{"local1"}) {
		t.Fatalf("matches = %v", matchNames(ms))
	}
	assertDecisions(t, a.Decisions, "captcha Ip 1.2.3.4 1m crowdsec s")

	// An empty overlay adds nothing.
	writeFile(t, path+".local", "# nothing here\n")
	if ps, err = Load(path); err != nil || len(ps) != 2 {
		t.Fatalf("empty overlay: %d profiles, %v", len(ps), err)
	}

	// Errors name the file they come from.
	writeFile(t, path+".local", "name: broken\nonsuccess: break\n")
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "profiles.yaml.local: document 1") || !strings.Contains(err.Error(), `profile "broken"`) {
		t.Fatalf("overlay error = %v", err)
	}
	writeFile(t, path+".local", "name: ok\n")
	writeFile(t, path, "name: ok2\n---\nname: base\nfilters: [Alert.Nope]\n")
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), "profiles.yaml: document 2 (profile \"base\")") {
		t.Fatalf("base error = %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(""); err == nil {
		t.Fatal("empty path accepted")
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	// A .local alone is not enough: the base file is required.
	path := filepath.Join(dir, "p.yaml")
	writeFile(t, path+".local", "name: l\n")
	if _, err := Load(path); err == nil {
		t.Fatal("missing base file accepted")
	}
	// Zero profiles across both files.
	writeFile(t, path+".local", "")
	writeFile(t, path, "# empty\n")
	if _, err := Load(path); err == nil || err.Error() != "zero profiles loaded for LAPI" {
		t.Fatalf("zero profiles: %v", err)
	}
}

func TestLoadReferenceFixture(t *testing.T) {
	ps, err := Load("testdata/reference_profiles.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 3 {
		t.Fatalf("got %d profiles", len(ps))
	}
}

// Every example profiles file kept in testdata loads (the differential test
// in e2e checks their decisions against the reference), except the copy of
// the reference's config fixture, which both refuse.
func TestExampleProfilesLoad(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) < 6 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range files {
		_, err := Load(f)
		if strings.HasSuffix(f, "config_fixture_profiles.yaml") {
			if err == nil || !strings.Contains(err.Error(), "unknown name sprintf") {
				t.Errorf("%s: %v", f, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
