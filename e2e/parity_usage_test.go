package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/models"
)

func usageMetric(name, unit string, value float64, labels map[string]string) *models.DetailedMetrics {
	now, win := time.Now().Unix(), int64(1800)
	return &models.DetailedMetrics{Meta: &models.MetricsMeta{UtcNowTimestamp: &now, WindowSizeSeconds: &win},
		Items: []*models.MetricsDetailItem{{Name: &name, Unit: &unit, Value: &value, Labels: labels}}}
}

// Usage metrics sent by the real clients (apiclient's UsageMetrics.Add, as
// the agent and go-cs-bouncer's metrics provider send them) to one node
// are replicated: `inspect` on another node shows them.
func TestParityUsageMetricsReplicated(t *testing.T) {
	c := StartCluster(t, 3, 155)
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)

	// the machine is added on n1, its agent talks to n2
	n1.MustCLI("machines", "add", "agent-usage", "--password", "pw-usage-1")
	lpClient := newWatcher(t, n2.Server, "agent-usage", "pw-usage-1")
	ver, start := "v1.7.6", time.Now().Unix()
	osName, osVer := "debian", "12"
	lp := &models.AllMetrics{LogProcessors: []*models.LogProcessorsMetrics{{
		BaseMetrics: models.BaseMetrics{Version: &ver, UtcStartupTimestamp: &start, Os: &models.OSversion{Name: &osName, Version: &osVer},
			FeatureFlags: []string{},
			Metrics:      []*models.DetailedMetrics{usageMetric("read", "line", 1234, map[string]string{"datasource_type": "file", "source": "/var/log/auth.log"})}},
		Datasources: map[string]int64{"file": 1},
		HubItems:    models.HubItems{},
	}}}
	if _, err := call("UsageMetrics.Add (agent)", func(ctx context.Context) (any, error) {
		_, _, err := lpClient.UsageMetrics.Add(ctx, lp)
		return nil, err
	}); err != nil {
		t.Fatalf("agent usage metrics: %v", err)
	}

	addBouncer(t, n1.Server, "fw-usage", "key-usage-0123456789")
	lb := newLiveBouncer(t, n3.Server, "key-usage-0123456789")
	bver := "v0.0.21"
	rc := &models.AllMetrics{RemediationComponents: []*models.RemediationComponentsMetrics{{
		BaseMetrics: models.BaseMetrics{Version: &bver, UtcStartupTimestamp: &start, FeatureFlags: []string{},
			Metrics: []*models.DetailedMetrics{usageMetric("dropped", "packet", 42, map[string]string{"origin": "CAPI", "ip_type": "ipv4"})}},
		Type: "crowdsec-firewall-bouncer",
	}}}
	if _, err := call("UsageMetrics.Add (bouncer)", func(ctx context.Context) (any, error) {
		_, _, err := lb.APIClient.UsageMetrics.Add(ctx, rc)
		return nil, err
	}); err != nil {
		t.Fatalf("bouncer usage metrics: %v", err)
	}

	type inspect struct {
		Usage []struct {
			Sent    bool            `json:"sent_to_capi"`
			Metrics json.RawMessage `json:"metrics"`
		} `json:"usage_metrics"`
	}
	for _, nd := range c.Nodes {
		for _, q := range []struct{ kind, name, want string }{
			{"machines", "agent-usage", `"/var/log/auth.log"`},
			{"bouncers", "fw-usage", `"dropped"`},
		} {
			waitFor(t, 10*time.Second, fmt.Sprintf("%s inspect %s on %s", q.kind, q.name, nd.ID), func() (bool, string) {
				out, err := nd.CLI(q.kind, "inspect", q.name, "-o", "json")
				if err != nil {
					return false, err.Error()
				}
				var v inspect
				if err := json.Unmarshal([]byte(out), &v); err != nil {
					return false, err.Error()
				}
				ok := len(v.Usage) == 1 && !v.Usage[0].Sent && strings.Contains(string(v.Usage[0].Metrics), q.want)
				return ok, out
			})
		}
	}
	if out := n3.MustCLI("bouncers", "inspect", "fw-usage"); !strings.Contains(out, "dropped") || !strings.Contains(out, "ip_type=ipv4 origin=CAPI") {
		t.Fatalf("bouncers inspect on n3:\n%s", out)
	}
}
