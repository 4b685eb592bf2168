package lapi

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/halapi/halapi/fsm"
)

// What a component sends to /v1/usage-metrics is kept (its metrics list,
// labels included) for the Central API and inspect; an oversized list is
// refused with nothing written.
func TestUsageMetricsStored(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m")
	e.bouncer("fw", "k")
	lp := `{"log_processors":[{"version":"v1.7.6","os":{"name":"debian","version":"12"},"utc_startup_timestamp":1,"hub_items":{},"datasources":{"file":1},` +
		`"metrics":[{"meta":{"utc_now_timestamp":1700000000,"window_size_seconds":1800},"items":[{"name":"read","value":42,"unit":"line","labels":{"datasource_type":"file","source":"/var/log/auth.log"}}]}]}]}`
	e.expect(e.do("POST", "/v1/usage-metrics", lp, withToken(tok)), 201)
	us := e.fsm.Machine("m").Usage
	if len(us) != 1 || us[0].ReceivedAt != e.now().UnixNano() {
		t.Fatalf("usage %+v", us)
	}
	var got []map[string]any
	if err := json.Unmarshal(us[0].Metrics, &got); err != nil || len(got) != 1 {
		t.Fatalf("stored %s: %v", us[0].Metrics, err)
	}
	item := got[0]["items"].([]any)[0].(map[string]any)
	if item["name"] != "read" || item["value"] != 42.0 || item["labels"].(map[string]any)["source"] != "/var/log/auth.log" {
		t.Fatalf("stored item %v", item)
	}
	rc := `{"remediation_components":[{"version":"v0.0.21","type":"fw","utc_startup_timestamp":1,"os":{"name":"linux","version":"6"},` +
		`"metrics":[{"meta":{"utc_now_timestamp":1700000000,"window_size_seconds":1800},"items":[{"name":"dropped","value":7,"unit":"request","labels":{"origin":"CAPI"}}]}]}]}`
	e.expect(e.do("POST", "/v1/usage-metrics", rc, withKey("k"), withUA("crowdsec-firewall-bouncer/v0.0.1")), 201)
	if bu := e.fsm.Bouncer("fw").Usage; len(bu) != 1 || !strings.Contains(string(bu[0].Metrics), `"dropped"`) {
		t.Fatalf("bouncer usage %+v", bu)
	}
	// no metrics: an empty list is stored (the base info still counts)
	e.expect(e.do("POST", "/v1/usage-metrics", `{"remediation_components":[{"version":"v0.0.21","utc_startup_timestamp":1}]}`,
		withKey("k"), withUA("crowdsec-firewall-bouncer/v0.0.1")), 201)
	if bu := e.fsm.Bouncer("fw").Usage; len(bu) != 2 || string(bu[1].Metrics) != "[]" {
		t.Fatalf("bouncer usage %+v", bu)
	}
	// oversized: 413, nothing written
	big := `{"remediation_components":[{"version":"v9","utc_startup_timestamp":1,"metrics":[{"meta":{},"items":[` +
		strings.Repeat(`{"name":"n","value":1,"unit":"u"},`, fsm.MaxUsageBytes/30) + `{"name":"n","value":1,"unit":"u"}]}]}]}`
	r := e.expect(e.do("POST", "/v1/usage-metrics", big, withKey("k"), withUA("crowdsec-firewall-bouncer/v0.0.1")), 413)
	if !strings.Contains(r.body, `"message"`) {
		t.Fatalf("413 body %q", r.body)
	}
	if b := e.fsm.Bouncer("fw"); len(b.Usage) != 2 || b.Version == "v9" {
		t.Fatalf("oversized payload wrote: %+v", b)
	}
}
