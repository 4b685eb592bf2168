package e2e

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
)

func ptr[T any](v T) *T { return &v }

// agentAlert builds an alert the way the crowdsec agent sends an overflow
// (pkg/leakybucket/overflows.go): no decisions, remediation true, source
// scope Ip, nanosecond timestamps, events with meta.
func agentAlert(ip, scenario string, nEvents int) *models.Alert {
	now := time.Now().UTC()
	start := now.Add(-30 * time.Second).Format(time.RFC3339Nano)
	stop := now.Format(time.RFC3339Nano)

	events := make([]*models.Event, 0, nEvents)
	for i := range nEvents {
		ts := now.Add(-time.Duration(nEvents-i) * time.Second).Format(time.RFC3339Nano)
		events = append(events, &models.Event{
			Timestamp: ptr(ts),
			Meta: models.Meta{
				{Key: "source_ip", Value: ip},
				{Key: "service", Value: "ssh"},
				{Key: "log_type", Value: "ssh_failed-auth"},
				{Key: "target_user", Value: fmt.Sprintf("user%d", i)},
			},
		})
	}

	return &models.Alert{
		Scenario:        ptr(scenario),
		ScenarioHash:    ptr("4441dcff07020f6690d998b7101e642359ba405c2abb83565bbbdcee36de280f"),
		ScenarioVersion: ptr("0.3"),
		Message:         ptr(fmt.Sprintf("Ip %s performed '%s' (%d events over 30s) at %s", ip, scenario, nEvents, stop)),
		Capacity:        ptr(int32(5)),
		EventsCount:     ptr(int32(nEvents)),
		Leakspeed:       ptr("10s"),
		StartAt:         ptr(start),
		StopAt:          ptr(stop),
		Simulated:       ptr(false),
		Remediation:     true,
		Source: &models.Source{
			Scope:     ptr("Ip"),
			Value:     ptr(ip),
			IP:        ip,
			Range:     "192.0.2.0/24",
			AsNumber:  "64496",
			AsName:    "EXAMPLE-AS",
			Cn:        "FR",
			Latitude:  48.8566,
			Longitude: 2.3522,
		},
		Events: events,
		Meta: models.Meta{
			{Key: "target_user", Value: `["root"]`},
		},
	}
}

// cscliAlert builds the alert `cscli decisions add` sends
// (cmd/crowdsec-cli/clidecision/decisions.go).
func cscliAlert(scope, value, duration, typ, login string) *models.Alert {
	now := time.Now().UTC().Format(time.RFC3339)
	reason := fmt.Sprintf("manual '%s' from '%s'", typ, login)

	return &models.Alert{
		Capacity: ptr(int32(0)),
		Decisions: []*models.Decision{{
			Duration: ptr(duration),
			Scope:    ptr(scope),
			Value:    ptr(value),
			Type:     ptr(typ),
			Scenario: ptr(reason),
			Origin:   ptr("cscli"),
		}},
		Events:          []*models.Event{},
		EventsCount:     ptr(int32(1)),
		Leakspeed:       ptr("0"),
		Message:         ptr(reason),
		ScenarioHash:    ptr(""),
		Scenario:        ptr(reason),
		ScenarioVersion: ptr(""),
		Simulated:       ptr(false),
		Source: &models.Source{
			IP:    value,
			Scope: ptr(scope),
			Value: ptr(value),
		},
		StartAt:     ptr(now),
		StopAt:      ptr(now),
		CreatedAt:   now,
		Remediation: true,
	}
}

// pushAlerts sends POST /v1/alerts and returns the new IDs as integers.
func pushAlerts(t testing.TB, c *apiclient.ApiClient, alerts ...*models.Alert) []int {
	t.Helper()

	ids := mustCall(t, "Alerts.Add", func(ctx context.Context) (*models.AddAlertsResponse, error) {
		r, _, err := c.Alerts.Add(ctx, models.AddAlertsRequest(alerts))
		return r, err
	})
	if ids == nil {
		t.Fatalf("Alerts.Add: nil response")
	}
	if len(*ids) != len(alerts) {
		t.Fatalf("Alerts.Add: got %d ids %v for %d alerts", len(*ids), *ids, len(alerts))
	}

	out := make([]int, 0, len(*ids))
	for _, s := range *ids {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("Alerts.Add: id %q is not a positive integer string", s)
		}
		out = append(out, n)
	}

	return out
}

// addDecision does `cscli decisions add` and returns the alert id.
func addDecision(t testing.TB, c *apiclient.ApiClient, scope, value, duration string) int {
	t.Helper()

	return pushAlerts(t, c, cscliAlert(scope, value, duration, "ban", "e2e"))[0]
}

func getAlert(t testing.TB, c *apiclient.ApiClient, id int) *models.Alert {
	t.Helper()

	a := mustCall(t, fmt.Sprintf("Alerts.GetByID(%d)", id), func(ctx context.Context) (*models.Alert, error) {
		a, _, err := c.Alerts.GetByID(ctx, id)
		return a, err
	})
	if a == nil {
		t.Fatalf("Alerts.GetByID(%d): nil alert", id)
	}
	if a.ID != int64(id) {
		t.Fatalf("Alerts.GetByID(%d): got alert id %d", id, a.ID)
	}

	return a
}

// listAlerts lists alerts the way `cscli alerts list -a` does
// (include_capi=false, limit=0) with extra filters applied by fn.
func listAlerts(t testing.TB, c *apiclient.ApiClient, fn func(*apiclient.AlertsListOpts)) models.GetAlertsResponse {
	t.Helper()

	opts := apiclient.AlertsListOpts{IncludeCAPI: ptr(false), Limit: ptr(0)}
	if fn != nil {
		fn(&opts)
	}

	r := mustCall(t, "Alerts.List", func(ctx context.Context) (*models.GetAlertsResponse, error) {
		r, _, err := c.Alerts.List(ctx, opts)
		return r, err
	})
	if r == nil {
		return nil
	}

	return *r
}

func alertIDs(alerts models.GetAlertsResponse) []int {
	ids := make([]int, 0, len(alerts))
	for _, a := range alerts {
		ids = append(ids, int(a.ID))
	}
	return ids
}

// sameIDs reports whether got and want hold the same ids in any order.
func sameIDs(got, want []int) bool {
	g := slices.Clone(got)
	w := slices.Clone(want)
	slices.Sort(g)
	slices.Sort(w)
	return slices.Equal(g, w)
}

// parseDuration parses a LAPI decision duration (Go form, optional leading
// "<N>d").
func parseDuration(t testing.TB, s string) time.Duration {
	t.Helper()

	var days time.Duration
	rest := s
	neg := false
	if strings.HasPrefix(rest, "-") {
		neg = true
		rest = rest[1:]
	}
	if i := strings.Index(rest, "d"); i > 0 {
		n, err := strconv.Atoi(rest[:i])
		if err == nil {
			days = time.Duration(n) * 24 * time.Hour
			rest = rest[i+1:]
		}
	}
	d := time.Duration(0)
	if rest != "" {
		var err error
		d, err = time.ParseDuration(rest)
		if err != nil {
			t.Fatalf("decision duration %q: %v", s, err)
		}
	}
	d += days
	if neg {
		d = -d
	}

	return d
}

// checkDuration asserts a decision's remaining duration lies in
// (want-slack, want].
func checkDuration(t testing.TB, what string, got *string, want, slack time.Duration) {
	t.Helper()

	if got == nil {
		t.Fatalf("%s: no duration", what)
	}
	d := parseDuration(t, *got)
	if d > want || d <= want-slack {
		t.Fatalf("%s: duration %q, want in (%s, %s]", what, *got, want-slack, want)
	}
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// checkDecision asserts the identifying fields of a decision.
func checkDecision(t testing.TB, what string, d *models.Decision, origin, typ, scope, value string) {
	t.Helper()

	if d == nil {
		t.Fatalf("%s: nil decision", what)
	}
	if d.ID <= 0 {
		t.Errorf("%s: decision id %d, want > 0", what, d.ID)
	}
	if str(d.Origin) != origin || str(d.Type) != typ || str(d.Scope) != scope || str(d.Value) != value {
		t.Fatalf("%s: decision origin/type/scope/value = %s/%s/%s/%s, want %s/%s/%s/%s", what,
			str(d.Origin), str(d.Type), str(d.Scope), str(d.Value), origin, typ, scope, value)
	}
}

func fmtDecisions(ds []*models.Decision) string {
	parts := make([]string, 0, len(ds))
	for _, d := range ds {
		if d == nil {
			parts = append(parts, "<nil>")
			continue
		}
		parts = append(parts, fmt.Sprintf("{id:%d %s %s %s:%s %s %q}", d.ID, str(d.Origin), str(d.Type),
			str(d.Scope), str(d.Value), str(d.Duration), str(d.Scenario)))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func decisionsFor(ds []*models.Decision, value string) []*models.Decision {
	var out []*models.Decision
	for _, d := range ds {
		if d != nil && str(d.Value) == value {
			out = append(out, d)
		}
	}
	return out
}

// approxTime asserts that two RFC 3339 times are within a second (the LAPI
// returns second precision).
func approxTime(t testing.TB, what, got, want string) {
	t.Helper()

	g, err := time.Parse(time.RFC3339, got)
	if err != nil {
		t.Fatalf("%s: %q is not RFC 3339: %v", what, got, err)
	}
	w, err := time.Parse(time.RFC3339, want)
	if err != nil {
		t.Fatalf("%s: bad reference time %q: %v", what, want, err)
	}
	if math.Abs(float64(g.Sub(w))) >= float64(time.Second) {
		t.Fatalf("%s: %s, want %s (within 1s)", what, got, want)
	}
}
