//go:build cgo || sqlite_modernc

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"
	"github.com/google/uuid"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/apiserver/middlewares/v1"
	"github.com/crowdsecurity/crowdsec/pkg/csconfig"
	"github.com/crowdsecurity/crowdsec/pkg/database"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// `halapi import` from a database written by CrowdSec v1.7.6's own
// pkg/database (the code its LAPI and cscli run): machines, bouncers, the
// alerts and decisions cscli and agents create, allowlists. Building the
// reference LAPI binary takes minutes on this machine, so the reference
// data is made with its database layer, as cscli makes it.

const (
	importAgentPassword = "agent-secret-Passw0rd"
	importBouncerKey    = "fw-bouncer-key-0123456789abcdef"
)

// csReference is a CrowdSec LAPI's config dir and database.
type csReference struct {
	ConfigPath string
	DB         *database.Client
	// Active are the values of the active decisions, as the reference's
	// own query returns them.
	Active map[string]bool
}

func ptrTo[T any](v T) *T { return &v }

func csDecision(origin, scenario, scope, value, typ, duration string, withUUID bool) *models.Decision {
	d := &models.Decision{Origin: ptrTo(origin), Scenario: ptrTo(scenario), Scope: ptrTo(scope), Value: ptrTo(value),
		Type: ptrTo(typ), Duration: ptrTo(duration)}
	if withUUID {
		d.UUID = uuid.NewString()
	}
	return d
}

func csAlert(scenario, scope, value string, decisions ...*models.Decision) *models.Alert {
	now := time.Now().UTC().Format(time.RFC3339)
	return &models.Alert{
		Scenario: ptrTo(scenario), ScenarioHash: ptrTo(""), ScenarioVersion: ptrTo(""), Message: ptrTo(scenario),
		EventsCount: ptrTo(int32(1)), Leakspeed: ptrTo("0"), Capacity: ptrTo(int32(0)), Simulated: ptrTo(false),
		StartAt: ptrTo(now), StopAt: ptrTo(now), Remediation: true, UUID: uuid.NewString(),
		Source:    &models.Source{Scope: ptrTo(scope), Value: ptrTo(value), IP: value},
		Events:    []*models.Event{{Timestamp: ptrTo(now), Meta: models.Meta{{Key: "source_ip", Value: value}}}},
		Meta:      models.Meta{{Key: "service", Value: "ssh"}},
		Decisions: decisions,
	}
}

// newCSReference writes a CrowdSec config dir and fills its SQLite
// database through CrowdSec's database client.
func newCSReference(t *testing.T) *csReference {
	t.Helper()
	dbPath := filepath.Join(t.TempDir(), "crowdsec.db")
	return newCSReferenceDB(t, &csconfig.DatabaseCfg{Type: "sqlite", DbPath: dbPath},
		fmt.Sprintf("  type: sqlite\n  db_path: %s\n", dbPath))
}

// newCSReferenceDB is newCSReference on any database CrowdSec supports:
// cfg opens it, dbYAML is the same as config.yaml's db_config lines.
func newCSReferenceDB(t *testing.T, cfg *csconfig.DatabaseCfg, dbYAML string) *csReference {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	dbc, err := database.NewClient(ctx, cfg, nil)
	if err != nil {
		t.Fatalf("crowdsec database: %v", err)
	}
	t.Cleanup(func() { _ = dbc.Ent.Close() })

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	pw := strfmt.Password(importAgentPassword)
	_, err = dbc.CreateMachine(ctx, ptrTo("agent1"), &pw, "127.0.0.1", true, false, "password")
	must("machine agent1", err)
	pending := strfmt.Password("pending-Passw0rd")
	_, err = dbc.CreateMachine(ctx, ptrTo("pending1"), &pending, "127.0.0.2", false, false, "password")
	must("machine pending1", err)
	tlsPw := strfmt.Password(uuid.NewString())
	_, err = dbc.CreateMachine(ctx, ptrTo("tlsagent@127.0.0.3"), &tlsPw, "127.0.0.3", true, false, "tls")
	must("machine tlsagent", err)
	_, err = dbc.CreateBouncer(ctx, "fw1", "127.0.0.1", v1.HashSHA512(importBouncerKey), "api-key", false)
	must("bouncer fw1", err)
	_, err = dbc.CreateBouncer(ctx, "tlsfw@127.0.0.4", "127.0.0.4", v1.HashSHA512(uuid.NewString()), "tls", true)
	must("bouncer tlsfw", err)
	_, err = dbc.CreateBouncer(ctx, "odd", "127.0.0.5", v1.HashSHA512("odd-key"), "oauth", false)
	must("bouncer odd", err)

	// what `cscli decisions add` stores, an agent's alert with two
	// decisions (one of them without UUID, as older LAPIs wrote), an
	// expired one and a range
	_, err = dbc.CreateAlert(ctx, "agent1", []*models.Alert{
		csAlert("manual 'ban' from 'agent1'", "Ip", "192.0.2.10",
			csDecision("cscli", "manual 'ban' from 'agent1'", "Ip", "192.0.2.10", "ban", "4h", true)),
		csAlert("crowdsecurity/ssh-bf", "Ip", "198.51.100.7",
			csDecision("crowdsec", "crowdsecurity/ssh-bf", "Ip", "198.51.100.7", "ban", "4h", true),
			csDecision("crowdsec", "crowdsecurity/ssh-bf", "Ip", "198.51.100.8", "captcha", "2h", false)),
		csAlert("manual 'ban' from 'agent1'", "Range", "203.0.113.0/24",
			csDecision("cscli", "manual 'ban' from 'agent1'", "Range", "203.0.113.0/24", "ban", "24h", true)),
		csAlert("manual 'ban' from 'agent1'", "Ip", "192.0.2.99",
			csDecision("cscli", "manual 'ban' from 'agent1'", "Ip", "192.0.2.99", "ban", "-1h", true)),
		csAlert("manual 'ban' from 'agent1'", "Country", "FR",
			csDecision("cscli", "manual 'ban' from 'agent1'", "Country", "FR", "ban", "4h", true)),
	})
	must("alerts", err)

	al, err := dbc.CreateAllowList(ctx, "office", "office ranges", "", false)
	must("allowlist", err)
	_, err = dbc.AddToAllowlist(ctx, al, []*models.AllowlistItem{
		{Value: "10.1.0.0/16", Description: "office"},
		{Value: "10.2.0.1", Description: "vpn", Expiration: strfmt.DateTime(time.Now().Add(48 * time.Hour))},
		{Value: "10.3.0.1", Description: "old", Expiration: strfmt.DateTime(time.Now().Add(-time.Hour))},
	})
	must("allowlist items", err)

	// the reference's own view of its active decisions
	active, err := dbc.QueryAllDecisionsWithFilters(ctx, map[string][]string{})
	must("active decisions", err)
	ref := &csReference{DB: dbc, Active: map[string]bool{}}
	for _, d := range active {
		if d.Until != nil && d.Until.After(time.Now()) {
			ref.Active[d.Value] = true
		}
	}

	creds := filepath.Join(dir, "online_api_credentials.yaml")
	must("credentials", os.WriteFile(creds, []byte("url: https://api.crowdsec.net/\nlogin: imported-capi-login\npassword: imported-capi-password\n"), 0o600))
	must("console", os.WriteFile(filepath.Join(dir, "console.yaml"), []byte("share_manual_decisions: false\nshare_custom: true\nshare_tainted: true\nshare_context: false\n"), 0o600))
	must("profiles", os.WriteFile(filepath.Join(dir, "profiles.yaml"), []byte(`name: default_ip_remediation
filters:
 - Alert.Remediation == true && Alert.GetScope() == "Ip"
decisions:
 - type: ban
   duration: 4h
on_success: break
`), 0o600))
	ref.ConfigPath = filepath.Join(dir, "config.yaml")
	confYAML := fmt.Sprintf(`common:
  log_media: stdout
config_paths:
  config_dir: %[1]s
  data_dir: %[1]s
db_config:
%[2]s  flush:
    max_items: 5000
api:
  server:
    listen_uri: 127.0.0.1:8080
    profiles_path: %[1]s/profiles.yaml
    console_path: %[1]s/console.yaml
    online_client:
      credentials_path: %[3]s
`, dir, dbYAML, creds)
	must("config.yaml", os.WriteFile(ref.ConfigPath, []byte(confYAML), 0o600))
	return ref
}

type importCount struct {
	Kind       string `json:"kind"`
	Add        int    `json:"add"`
	Present    int    `json:"present"`
	NotCarried int    `json:"not_carried"`
}

type importReport struct {
	Counts  []importCount `json:"counts"`
	Skipped []struct {
		Kind, Item, Reason string
	} `json:"skipped"`
	Applied bool `json:"applied"`
}

func (r importReport) count(kind string) importCount {
	for _, c := range r.Counts {
		if c.Kind == kind {
			return c
		}
	}
	return importCount{Kind: kind}
}

func runImport(t *testing.T, s *Server, args ...string) importReport {
	t.Helper()
	out := s.MustCLI(append([]string{"import", "-o", "json"}, args...)...)
	var rep importReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("import output: %v\n%s", err, out)
	}
	return rep
}

func checkCounts(t *testing.T, what string, rep importReport, want map[string][3]int) {
	t.Helper()
	for kind, w := range want {
		c := rep.count(kind)
		if got := [3]int{c.Add, c.Present, c.NotCarried}; got != w {
			t.Errorf("%s: %s: add/present/not carried = %v, want %v (report %+v)", what, kind, got, w, rep)
		}
	}
}

// firstStream is a bouncer's first stream answer (startup=true): every
// active decision of the scopes the reference holds.
func firstStream(t *testing.T, url, key string) map[string]bool {
	t.Helper()
	b := &csbouncer.StreamBouncer{APIKey: key, APIUrl: url, TickerInterval: "1s", UserAgent: "e2e-import-bouncer/v0.0.21"}
	if err := b.Init(); err != nil {
		t.Fatalf("StreamBouncer.Init: %v", err)
	}
	resp, err := call("stream", func(ctx context.Context) (*models.DecisionsStreamResponse, error) {
		r, _, err := b.APIClient.Decisions.GetStream(ctx, apiclient.DecisionsStreamOpts{Startup: true, Scopes: "ip,range,country"})
		return r, err
	})
	if err != nil {
		t.Fatalf("stream on %s: %v", url, err)
	}
	got := map[string]bool{}
	for _, d := range resp.New {
		got[*d.Value] = true
	}
	return got
}

func TestImportCrowdSecSQLiteIntoCluster(t *testing.T) {
	ref := newCSReference(t)
	wantActive := map[string]bool{"192.0.2.10": true, "198.51.100.7": true, "198.51.100.8": true, "203.0.113.0/24": true, "FR": true}
	if d := setDiff(ref.Active, wantActive); d != "" {
		t.Fatalf("reference active decisions: %s", d)
	}

	c := StartCluster(t, 3, 130)
	n2 := c.Node(2)

	want := map[string][3]int{
		"machines": {3, 0, 0}, "bouncers": {2, 0, 1}, "alerts": {4, 0, 1}, "decisions": {5, 0, 1},
		"allowlists": {1, 0, 0}, "allowlist items": {2, 0, 1}, "capi credentials": {1, 0, 0},
		"console options": {0, 1, 0}, "profiles": {0, 1, 0},
	}
	dry := runImport(t, n2.Server, "--crowdsec-config", ref.ConfigPath, "--dry-run")
	checkCounts(t, "dry run", dry, want)
	if dry.Applied {
		t.Error("dry run says applied")
	}
	var reasons []string
	for _, s := range dry.Skipped {
		reasons = append(reasons, s.Kind+": "+s.Item+": "+s.Reason)
	}
	for _, w := range []string{`bouncers: odd: unknown auth type "oauth"`, "decisions: 1 rows: expired", "allowlist items: office 10.3.0.1: expired"} {
		if !strings.Contains(strings.Join(reasons, "\n"), w) {
			t.Errorf("not-carried list lacks %q:\n%s", w, strings.Join(reasons, "\n"))
		}
	}
	human := n2.MustCLI("import", "--crowdsec-config", ref.ConfigPath, "--dry-run")
	for _, w := range []string{"KIND", "TO ADD", "ALREADY PRESENT", "NOT CARRIED", "Not carried:", `bouncers odd: unknown auth type "oauth"`, "Dry run: nothing was changed."} {
		if !strings.Contains(human, w) {
			t.Errorf("human dry run lacks %q:\n%s", w, human)
		}
	}
	t.Logf("dry run:\n%s", human)
	if out := n2.MustCLI("machines", "list", "-o", "json"); strings.Contains(out, "agent1") {
		t.Fatalf("dry run wrote machines: %s", out)
	}

	rep := runImport(t, n2.Server, "--crowdsec-config", ref.ConfigPath)
	checkCounts(t, "import", rep, want)
	if !rep.Applied {
		t.Fatal("import not applied")
	}
	c.WaitCaughtUp(c.Nodes...)

	for _, nd := range c.Nodes {
		// the agent logs in with its CrowdSec password, the real apiclient
		w := newWatcher(t, nd.Server, "agent1", importAgentPassword)
		if _, err := call("alerts list", func(ctx context.Context) (*models.GetAlertsResponse, error) {
			r, _, err := w.Alerts.List(ctx, apiclient.AlertsListOpts{})
			return r, err
		}); err != nil {
			t.Errorf("%s: agent1 with its CrowdSec password: %v", nd.ID, err)
		}
		// the bouncer's key works and the stream holds exactly the
		// reference's active decisions
		if got := firstStream(t, nd.URL, importBouncerKey); setDiff(got, ref.Active) != "" {
			t.Errorf("%s: stream vs reference: %s", nd.ID, setDiff(got, ref.Active))
		}
	}

	// validation state, auth types and the CAPI login were carried
	m, ok := n2.listedObject("machines", "pending1")
	if !ok || m["isValidated"] == true {
		t.Errorf("pending1 should be imported not validated: %v", m)
	}
	if m, ok := n2.listedObject("machines", "tlsagent@127.0.0.3"); !ok || m["auth_type"] != "tls" {
		t.Errorf("tls machine: %v", m)
	}
	if b, ok := n2.listedObject("bouncers", "tlsfw@127.0.0.4"); !ok || b["auth_type"] != "tls" {
		t.Errorf("tls bouncer: %v", b)
	}
	if out := n2.MustCLI("capi", "status"); !strings.Contains(out, "imported-capi-login") {
		t.Errorf("capi status lacks the imported login:\n%s", out)
	}
	if out := n2.MustCLI("allowlists", "list", "-o", "json"); !strings.Contains(out, "10.1.0.0/16") || !strings.Contains(out, "10.2.0.1") || strings.Contains(out, "10.3.0.1") {
		t.Errorf("allowlist items: %s", out)
	}

	// a second import, from another node, changes nothing
	again := runImport(t, c.Node(3).Server, "--crowdsec-config", ref.ConfigPath)
	checkCounts(t, "second import", again, map[string][3]int{
		"machines": {0, 3, 0}, "bouncers": {0, 2, 1}, "alerts": {0, 4, 1}, "decisions": {0, 5, 1},
		"allowlists": {0, 1, 0}, "allowlist items": {0, 2, 1}, "capi credentials": {0, 1, 0},
	})
	if got := firstStream(t, c.Node(1).URL, importBouncerKey); setDiff(got, ref.Active) != "" {
		t.Errorf("after the second import: %s", setDiff(got, ref.Active))
	}
}

func TestImportCrowdSecIntoFreshDataDir(t *testing.T) {
	ref := newCSReference(t)
	s := NewServer(t)
	s.ExtraArgs = []string{"--node-id", "imp1"}
	rep := runImport(t, s, "--crowdsec-config", ref.ConfigPath, "--node-id", "imp1")
	checkCounts(t, "fresh import", rep, map[string][3]int{"machines": {3, 0, 0}, "decisions": {5, 0, 1}})
	s.Start()
	w := newWatcher(t, s, "agent1", importAgentPassword)
	if _, err := call("alerts list", func(ctx context.Context) (*models.GetAlertsResponse, error) {
		r, _, err := w.Alerts.List(ctx, apiclient.AlertsListOpts{})
		return r, err
	}); err != nil {
		t.Errorf("agent1 on the node started from the import: %v", err)
	}
	if got := firstStream(t, s.URL, importBouncerKey); setDiff(got, ref.Active) != "" {
		t.Errorf("stream vs reference: %s", setDiff(got, ref.Active))
	}
	// --node-id on a data dir that holds a node is refused, dry run or not
	for _, extra := range [][]string{nil, {"--dry-run"}} {
		args := append([]string{"import", "--crowdsec-config", ref.ConfigPath, "--node-id", "imp1"}, extra...)
		if _, err := s.CLI(args...); err == nil || !strings.Contains(err.Error(), "already holds a node") {
			t.Errorf("%v on a used data dir: %v", extra, err)
		}
	}
	// the node runs: a second import goes through its socket and adds nothing
	again := runImport(t, s, "--crowdsec-config", ref.ConfigPath)
	checkCounts(t, "second import", again, map[string][3]int{"machines": {0, 3, 0}, "decisions": {0, 5, 1}, "alerts": {0, 4, 1}})
}

func TestImportCrowdSecBadInput(t *testing.T) {
	s := NewServer(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"import"}, "--crowdsec-config is required"},
		{[]string{"import", "--crowdsec-config", filepath.Join(dir, "absent.yaml")}, "no such file"},
		{[]string{"import", "--crowdsec-config", write("oracle.yaml", "db_config:\n  type: oracle\n")}, `unknown db_config type "oracle"`},
		{[]string{"import", "--crowdsec-config", write("nodb.yaml", "db_config:\n  type: sqlite\n  db_path: "+filepath.Join(dir, "absent.db")+"\n")}, "sqlite database"},
	}
	for _, c := range cases {
		out, err := s.CLI(c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: want an error with %q, got %v (%s)", c.args, c.want, err, out)
		}
	}
	// a valid database but no running node and no --node-id
	ref := newCSReference(t)
	if _, err := s.CLI("import", "--crowdsec-config", ref.ConfigPath); err == nil || !strings.Contains(err.Error(), "no running halapi node") {
		t.Errorf("without a node: %v", err)
	}
}
