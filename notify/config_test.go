package notify

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/halapi/halapi/lapi/models"
)

const httpDefault = `type: http
name: http_default
log_level: info
format: |
  {{.|toJson}}
url: http://127.0.0.1:9999/hook
method: POST
headers:
  Content-Type: application/json
  Authorization: "token ${HOOK_TOKEN}"
# group_wait: 30s
---
type: slack
name: slack_default
group_wait: 30s
group_threshold: 10
max_retry: 5
timeout: 20s
format: |
  {{range . -}}{{$alert := . -}}{{range .Decisions -}}{{.Value}} will get {{.Type}} for next {{.Duration}} for triggering {{.Scenario}}.{{end -}}{{end -}}
webhook: https://hooks.slack.com/services/xxx
---
`

func TestParseConfigs(t *testing.T) {
	cfgs, warns, err := ParseConfigs(map[string][]byte{
		"http.yaml": []byte(httpDefault),
		"README.md": []byte("not: [yaml"), // not read: the reference only reads .yaml/.yml
		"x.yml":     []byte("type: email\nname: email_default\nsmtp_host: smtp.example\n"),
	})
	if err != nil || len(warns) != 0 {
		t.Fatal(err, warns)
	}
	if got := Names(cfgs); strings.Join(got, ",") != "email_default,http_default,slack_default" {
		t.Fatalf("names %v", got)
	}
	h := cfgs[0]
	if h.Name != "http_default" || h.Type != "http" || h.Timeout != DefaultTimeout || h.GroupWait != 0 || h.GroupThreshold != 0 ||
		h.Plugin["url"] != "http://127.0.0.1:9999/hook" || h.Plugin["log_level"] != "info" || h.LogLevel != "info" {
		t.Fatalf("http: %+v", h)
	}
	s := cfgs[1]
	if s.GroupWait != 30*time.Second || s.GroupThreshold != 10 || s.MaxRetry != 5 || s.Timeout != 20*time.Second ||
		s.Plugin["webhook"] != "https://hooks.slack.com/services/xxx" {
		t.Fatalf("slack: %+v", s)
	}
	if _, ok := s.Plugin["group_wait"]; ok {
		t.Fatal("known keys leak into the plugin keys")
	}

	// Configure gets the reference's keys back, plugin keys inline, and
	// ${VAR} expanded (unset ones kept)
	b, err := h.ConfigureYAML(func(k string) (string, bool) {
		if k == "HOOK_TOKEN" {
			return "s3cr3t", true
		}
		return "", false
	})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := yaml.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	hd := back["headers"].(map[string]any)
	if back["name"] != "http_default" || back["type"] != "http" || back["url"] != "http://127.0.0.1:9999/hook" ||
		back["timeout"] != "5s" || hd["Authorization"] != "token s3cr3t" || back["format"] != "{{.|toJson}}\n" {
		t.Fatalf("configure yaml:\n%s", b)
	}
	if _, ok := back["group_wait"]; ok {
		t.Fatal("empty group_wait not omitted")
	}
	b, _ = s.ConfigureYAML(func(string) (string, bool) { return "", false })
	if !strings.Contains(string(b), "group_wait: 30s") || !strings.Contains(string(b), "max_retry: 5") {
		t.Fatalf("slack configure yaml:\n%s", b)
	}
	b, _ = h.ConfigureYAML(func(string) (string, bool) { return "", false })
	if !strings.Contains(string(b), "${HOOK_TOKEN}") {
		t.Fatalf("unset variable not kept:\n%s", b)
	}
}

func TestParseConfigsDuplicateLastWins(t *testing.T) {
	cfgs, warns, err := ParseConfigs(map[string][]byte{
		"a.yaml": []byte("type: http\nname: n1\nurl: a\n"),
		"b.yaml": []byte("type: http\nname: n1\nurl: b\n"),
	})
	if err != nil || len(cfgs) != 1 || cfgs[0].Plugin["url"] != "b" || len(warns) != 1 || !strings.Contains(warns[0], "defined multiple times") {
		t.Fatal(err, cfgs, warns)
	}
}

// Each bad config gives one error naming the file, the document and the
// problem.
func TestParseConfigsErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"name: x\n", "document 0: missing required field 'type'"},
		{"type: http\n", "missing required field 'name'"},
		{"type: http\nname: x\ngroup_wait: soon\n", `group_wait: time: invalid duration "soon"`},
		{"type: http\nname: x\ngroup_wait: -1s\n", "group_wait: must not be negative"},
		{"type: http\nname: x\ngroup_threshold: -3\n", "group_threshold: must not be negative"},
		{"type: http\nname: x\ngroup_threshold: many\n", "group_threshold: must be a whole number"},
		{"type: http\nname: x\nmax_retry: [1]\n", "max_retry: must be a whole number"},
		{"type: http\nname: x\ntimeout: {a: 1}\n", "timeout: must be a duration"},
		{"type: http\nname: x\nformat: '{{.Nope'\n", "format: template:"},
		{"type: http\nname: x\nformat: '{{ NoSuchFunc . }}'\n", `function "NoSuchFunc" not defined`},
		{"type: ../../bin/sh\nname: x\n", "type \"../../bin/sh\""},
		{"type: my-http\nname: x\n", "type \"my-http\""},
		{"type: http\nname: \"a b\"\n", "name \"a b\""},
		{"type: [http]\nname: x\n", "type: must be a string"},
		{"type: http\nname: ok\n---\ntype: http\nname: [1]\n", "document 1: name: must be a string"},
		{"type: http\nname: x\n  bad indent: 1\n", "document 0: yaml:"},
	} {
		_, _, err := ParseConfigs(map[string][]byte{"n.yaml": []byte(tc.doc)})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "notification config n.yaml: ") ||
			strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: got %v, want one line with %q", tc.doc, err, tc.want)
		}
	}
	big := make(map[string][]byte)
	for i := range maxConfigFiles + 1 {
		big[strings.Repeat("a", i+1)+".yaml"] = nil
	}
	if _, _, err := ParseConfigs(big); err == nil {
		t.Error("too many files accepted")
	}
	if _, _, err := ParseConfigs(map[string][]byte{"x.yaml": make([]byte, maxConfigBytes+1)}); err == nil {
		t.Error("oversized file accepted")
	}
}

func TestCheckProfiles(t *testing.T) {
	cfgs, _, _ := ParseConfigs(map[string][]byte{"a.yaml": []byte("type: http\nname: n1\n")})
	if err := CheckProfiles(cfgs, []string{"n1"}); err != nil {
		t.Fatal(err)
	}
	if err := CheckProfiles(cfgs, []string{"n1", "slack_default"}); err == nil || err.Error() != "config file for plugin slack_default not found" {
		t.Fatal(err)
	}
}

// The default templates of the reference's notification configs render
// over the alert model as they do there.
func TestRenderReferenceTemplates(t *testing.T) {
	cfgs, _, err := ParseConfigs(map[string][]byte{"n.yaml": []byte(httpDefault + `
type: email
name: email_default
format: |
  <html><body>
  {{range . -}}
    {{$alert := . -}}
    {{range .Decisions -}}
      <p><a href="https://www.whois.com/whois/{{.Value}}">{{.Value}}</a> will get <b>{{.Type}}</b> for next <b>{{.Duration}}</b> for triggering <b>{{.Scenario}}</b> on machine <b>{{$alert.MachineID}}</b>.</p> <p><a href="https://app.crowdsec.net/cti/{{.Value}}">CrowdSec CTI</a></p>
    {{end -}}
  {{end -}}
  {{ range . }}{{ GetMeta . "target_fqdn" }}{{ end }}
  </body></html>
`)})
	if err != nil {
		t.Fatal(err)
	}
	a := SampleAlert(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	a.Decisions = []*models.Decision{{Value: models.Str("1.2.3.4"), Type: models.Str("ban"), Duration: models.Str("4h"),
		Scenario: models.Str("crowdsecurity/ssh-bf"), Origin: models.Str("crowdsec"), Scope: models.Str("Ip")}}
	a.MachineID = "m1"
	a.Events = []*models.Event{{Meta: models.Meta{{Key: "target_fqdn", Value: "www.example"}}}}
	byName := map[string]*Config{}
	for _, c := range cfgs {
		byName[c.Name] = c
	}
	out, err := byName["slack_default"].Render([]*models.Alert{a})
	if err != nil || out != "1.2.3.4 will get ban for next 4h for triggering crowdsecurity/ssh-bf." {
		t.Fatalf("slack: %q %v", out, err)
	}
	out, err = byName["email_default"].Render([]*models.Alert{a})
	if err != nil || !strings.Contains(out, "<b>4h</b> for triggering <b>crowdsecurity/ssh-bf</b> on machine <b>m1</b>") ||
		!strings.Contains(out, "[www.example]") {
		t.Fatalf("email: %q %v", out, err)
	}
	out, err = byName["http_default"].Render([]*models.Alert{a})
	if err != nil || !strings.HasPrefix(out, `[{"capacity":0,`) || !strings.Contains(out, `"duration":"4h"`) {
		t.Fatalf("http: %q %v", out, err)
	}
}
