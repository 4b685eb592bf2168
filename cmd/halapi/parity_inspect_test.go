package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// machines inspect / bouncers inspect show the base information and the
// usage metrics the components sent (human and json).
func TestInspectShowsUsageMetrics(t *testing.T) {
	dir, addr := startNode(t)
	mustRun(t, "machines", "add", "agent1", "--password", "pw1", "--data-dir", dir)
	mustRun(t, "bouncers", "add", "fw", "--key", "k-123", "--data-dir", dir, "-o", "raw")

	post := func(path, body string, hdr map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	rc := `{"remediation_components":[{"version":"v0.0.31","type":"crowdsec-firewall-bouncer","utc_startup_timestamp":1,"os":{"name":"debian","version":"12"},` +
		`"feature_flags":["x1"],"metrics":[{"meta":{"utc_now_timestamp":1700000000,"window_size_seconds":1800},` +
		`"items":[{"name":"dropped","value":17,"unit":"packet","labels":{"origin":"CAPI","ip_type":"ipv4"}}]}]}]}`
	if r := post("/v1/usage-metrics", rc, map[string]string{"X-Api-Key": "k-123", "User-Agent": "crowdsec-firewall-bouncer/v0.0.31"}); r.StatusCode != 201 {
		t.Fatalf("bouncer usage-metrics: %d", r.StatusCode)
	}
	// the agent logs in, then sends its usage metrics
	resp, err := http.Post("http://"+addr+"/v1/watchers/login", "application/json",
		strings.NewReader(`{"machine_id":"agent1","password":"pw1","scenarios":[]}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("login %v %v", resp, err)
	}
	var lr struct{ Token string }
	_ = json.NewDecoder(resp.Body).Decode(&lr)
	resp.Body.Close()
	lp := `{"log_processors":[{"version":"v1.7.6","os":{"name":"debian","version":"12"},"utc_startup_timestamp":1,` +
		`"hub_items":{"collections":[{"name":"crowdsecurity/sshd","status":"enabled","version":"0.6"}]},"datasources":{"file":2},` +
		`"metrics":[{"meta":{"utc_now_timestamp":1700000000,"window_size_seconds":1800},"items":[{"name":"read","value":42,"unit":"line","labels":{"datasource_type":"file","source":"/var/log/auth.log"}}]}]}]}`
	if r := post("/v1/usage-metrics", lp, map[string]string{"Authorization": "Bearer " + lr.Token, "User-Agent": "crowdsec/v1.7.6"}); r.StatusCode != 201 {
		t.Fatalf("agent usage-metrics: %d", r.StatusCode)
	}

	out := mustRun(t, "bouncers", "inspect", "fw", "--data-dir", dir)
	for _, want := range []string{"Bouncer: fw", "debian/12", "Feature Flags", "x1", "forwarded to CAPI: not yet",
		"30m0s", "dropped", "17", "packet", "ip_type=ipv4 origin=CAPI"} {
		if !strings.Contains(out, want) {
			t.Errorf("bouncers inspect lacks %q:\n%s", want, out)
		}
	}
	out = mustRun(t, "machines", "inspect", "agent1", "--data-dir", dir)
	for _, want := range []string{"Machine: agent1", "CrowdSec version", "v1.7.6", "Datasources", "file: 2", "Collections",
		"crowdsecurity/sshd", "read", "42", "datasource_type=file source=/var/log/auth.log"} {
		if !strings.Contains(out, want) {
			t.Errorf("machines inspect lacks %q:\n%s", want, out)
		}
	}
	var js struct {
		ID    string `json:"machine_id"`
		Usage []struct {
			Sent    bool            `json:"sent_to_capi"`
			Metrics json.RawMessage `json:"metrics"`
		} `json:"usage_metrics"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "machines", "inspect", "agent1", "--data-dir", dir, "-o", "json")), &js); err != nil ||
		js.ID != "agent1" || len(js.Usage) != 1 || js.Usage[0].Sent || !bytes.Contains(js.Usage[0].Metrics, []byte(`"read"`)) {
		t.Fatalf("machines inspect -o json: %+v %v", js, err)
	}
	// unknown: one line, non-zero exit
	if _, errs, err := run(t, "bouncers", "inspect", "nope", "--data-dir", dir); err == nil || !strings.Contains(errs, "not found") ||
		strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("inspect unknown: %v %q", err, errs)
	}
}
