package main

import (
	"regexp"
	"strings"
	"testing"
)

// describedLabels is describedMetrics with each metric's labels, constant
// ones first ("a,b", "" for none).
func describedLabels(t *testing.T) map[string]string {
	t.Helper()
	re := regexp.MustCompile(`fqName: "([^"]+)".*constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}`)
	constName := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)=`)
	out := map[string]string{}
	for _, d := range serveDescriptors(t) {
		if m := re.FindStringSubmatch(d); m != nil {
			var ls []string
			for _, c := range constName.FindAllStringSubmatch(m[2], -1) {
				ls = append(ls, c[1])
			}
			if m[3] != "" {
				ls = append(ls, m[3])
			}
			out[m[1]] = strings.Join(ls, ",")
		}
	}
	return out
}

// The labels column of docs/metrics.md is each metric's label set, and
// every LAPI metric CrowdSec v1.7.6 exports (pkg/metrics/lapi.go and
// global.go, registered at the "full" level) is there under its name and
// with its labels, so dashboards written for CrowdSec keep working.
func TestMetricsLabelsDocumented(t *testing.T) {
	labels := describedLabels(t)
	crowdsec := map[string]string{
		"cs_lapi_route_requests_total":     "route,method",
		"cs_lapi_machine_requests_total":   "machine,route,method",
		"cs_lapi_bouncer_requests_total":   "bouncer,route,method",
		"cs_lapi_decisions_ko_total":       "bouncer",
		"cs_lapi_decisions_ok_total":       "bouncer",
		"cs_lapi_request_duration_seconds": "endpoint,method",
		"cs_active_decisions":              "reason,origin,action",
		"cs_alerts":                        "reason",
		"cs_info":                          "version",
	}
	for name, want := range crowdsec {
		got, ok := labels[name]
		if !ok {
			t.Errorf("CrowdSec's %s is not registered", name)
		} else if got != want {
			t.Errorf("%s labels {%s}, CrowdSec's are {%s}", name, got, want)
		}
	}
	doc := string(repoFile(t, "docs/metrics.md"))
	row := regexp.MustCompile("(?m)^\\| `([a-z_:]+)` \\| [a-z]+ \\| ([^|]*)\\|")
	rows := 0
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		rows++
		var ls []string
		for _, f := range strings.Split(m[2], ",") {
			if f = strings.Trim(strings.TrimSpace(f), "`"); f != "" {
				ls = append(ls, f)
			}
		}
		if got, ok := labels[m[1]]; ok && got != strings.Join(ls, ",") {
			t.Errorf("docs/metrics.md gives %s the labels %q, the server {%s}", m[1], m[2], got)
		}
	}
	if rows < len(crowdsec) {
		t.Fatalf("only %d table rows parsed", rows)
	}
}
