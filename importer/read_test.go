package importer

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi"
	"github.com/hashicorp/raft"
	"golang.org/x/crypto/bcrypt"
)

// mattnTime is how CrowdSec (mattn/go-sqlite3) stores times in SQLite.
func mattnTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.999999999-07:00") }

// newCrowdSecDB creates a SQLite database with CrowdSec v1.7.6's schema
// and fills it with rows as CrowdSec writes them.
func newCrowdSecDB(t *testing.T, now time.Time) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "crowdsec.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ddl, err := os.ReadFile("testdata/crowdsec-v1.7.6-sqlite.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range strings.Split(string(ddl), ";\n") {
		if strings.TrimSpace(stmt) == "" || strings.HasPrefix(strings.TrimSpace(stmt), "--") && !strings.Contains(stmt, "CREATE") {
			continue
		}
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("agent-pw"), bcrypt.MinCost)
	ts := mattnTime(now.Add(-time.Hour))
	future, past := mattnTime(now.Add(4*time.Hour)), mattnTime(now.Add(-time.Minute))
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	m := "INSERT INTO machines (id, created_at, updated_at, machine_id, password, ip_address, version, is_validated, auth_type, hubstate) VALUES (?,?,?,?,?,?,?,?,?,?)"
	exec(m, 1, ts, ts, "agent1", string(hash), "10.0.0.1", "v1.7.6", 1, "password", `{"parsers":[]}`)
	exec(m, 2, ts, ts, "pending", string(hash), "10.0.0.2", "", 0, "password", nil)
	exec(m, 3, ts, ts, "certagent", "x", "10.0.0.3", "", 1, "tls", nil)
	exec(m, 4, ts, ts, "weird", "x", "10.0.0.4", "", 1, "kerberos", nil)
	exec(m, 5, ts, ts, "plain", "not-bcrypt", "10.0.0.5", "", 1, "password", nil)
	b := "INSERT INTO bouncers (created_at, updated_at, name, api_key, revoked, ip_address, type, version, auth_type, auto_created, last_pull) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
	exec(b, ts, ts, "fw", lapi.HashKey("the-key"), 0, "10.0.1.1", "crowdsec-firewall-bouncer", "v0.0.31", "api-key", 0, ts)
	exec(b, ts, ts, "revoked-fw", lapi.HashKey("old-key"), 1, "", "", "", "api-key", 0, nil)
	exec(b, ts, ts, "tlsfw@10.0.1.2", lapi.HashKey("x"), 0, "10.0.1.2", "", "", "tls", 1, nil)
	exec(b, ts, ts, "odd", lapi.HashKey("y"), 0, "", "", "", "oauth", 0, nil)
	a := "INSERT INTO alerts (id, created_at, updated_at, scenario, message, events_count, started_at, stopped_at, source_ip, source_scope, source_value, source_country, source_latitude, capacity, leak_speed, simulated, uuid, remediation, machine_alerts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
	exec(a, 1, ts, ts, "crowdsecurity/ssh-bf", "ssh bf", 6, ts, ts, "192.0.2.1", "Ip", "192.0.2.1", "FR", 48.5, 5, "10s", 0, "alert-uuid-1", 1, 1)
	exec(a, 2, ts, ts, "manual 'ban' from 'agent1'", "", 1, ts, ts, "", "Range", "203.0.113.0/24", "", 0, 0, "", 0, "alert-uuid-2", 1, nil)
	exec(a, 3, ts, ts, "old", "", 1, ts, ts, "", "Ip", "192.0.2.9", "", 0, 0, "", 0, "alert-uuid-3", 1, 1)
	d := "INSERT INTO decisions (created_at, updated_at, until, scenario, type, scope, value, origin, simulated, uuid, alert_decisions) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
	exec(d, ts, ts, future, "crowdsecurity/ssh-bf", "ban", "Ip", "192.0.2.1", "crowdsec", 0, "11111111-2222-4333-8444-555555555555", 1)
	exec(d, ts, ts, future, "crowdsecurity/ssh-bf", "captcha", "ip", "192.0.2.2", "crowdsec", 0, nil, 1)
	exec(d, ts, ts, future, "manual 'ban' from 'agent1'", "ban", "Range", "203.0.113.0/24", "cscli", 0, "dec-uuid-3", 2)
	exec(d, ts, ts, past, "old", "ban", "Ip", "192.0.2.9", "cscli", 0, "dec-uuid-4", 3)
	exec(d, ts, ts, future, "x", "ban", "Ip", "not-an-ip", "cscli", 0, "dec-uuid-5", 2)
	exec(d, ts, ts, future, "x", "ban", "Ip", "192.0.2.77", "cscli", 0, "dec-uuid-6", nil)
	exec("INSERT INTO meta (created_at, updated_at, key, value, alert_metas) VALUES (?,?,?,?,?)", ts, ts, "service", "ssh", 1)
	exec("INSERT INTO events (created_at, updated_at, time, serialized, alert_events) VALUES (?,?,?,?,?)", ts, ts, ts, `[{"key":"source_ip","value":"192.0.2.1"}]`, 1)
	exec("INSERT INTO allow_lists (id, created_at, updated_at, name, from_console, description, allowlist_id) VALUES (1,?,?,'office',0,'office ranges','')", ts, ts)
	exec("INSERT INTO allow_lists (id, created_at, updated_at, name, from_console, description, allowlist_id) VALUES (2,?,?,'console',1,'from the console','cl-123')", ts, ts)
	it := "INSERT INTO allow_list_items (id, created_at, updated_at, expires_at, comment, value) VALUES (?,?,?,?,?,?)"
	exec(it, 1, ts, ts, nil, "office", "10.1.0.0/16")
	exec(it, 2, ts, ts, future, "vpn", "10.2.0.1")
	exec(it, 3, ts, ts, past, "gone", "10.3.0.1")
	exec(it, 4, ts, ts, nil, "", "10.4.0.1")
	for _, j := range [][2]int{{1, 1}, {1, 2}, {1, 3}, {2, 4}} {
		exec("INSERT INTO allow_list_allowlist_items (allow_list_id, allow_list_item_id) VALUES (?,?)", j[0], j[1])
	}
	return path
}

func readSource(t *testing.T, path string, now time.Time) *Source {
	t.Helper()
	ctx := context.Background()
	db, dialect, err := Open(ctx, DBConfig{Type: "sqlite", DbPath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	src, err := Read(ctx, db, dialect, now)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func skipped(src []Skip) string {
	var out []string
	for _, s := range src {
		out = append(out, s.Kind+"|"+s.Item+"|"+s.Reason)
	}
	return strings.Join(out, "\n")
}

func TestReadSQLite(t *testing.T) {
	now := time.Now()
	src := readSource(t, newCrowdSecDB(t, now), now)

	if len(src.Machines) != 3 {
		t.Fatalf("machines: %+v", src.Machines)
	}
	m := src.Machines[0]
	if m.ID != "agent1" || !m.Validated || m.IP != "10.0.0.1" || m.Version != "v1.7.6" || m.AuthType != "password" || string(m.HubState) != `{"parsers":[]}` {
		t.Errorf("agent1: %+v", m)
	}
	if bcrypt.CompareHashAndPassword(m.PasswordHash, []byte("agent-pw")) != nil {
		t.Error("agent1's hash does not verify its password")
	}
	if src.Machines[1].Validated || src.Machines[2].AuthType != "tls" {
		t.Errorf("pending/certagent: %+v %+v", src.Machines[1], src.Machines[2])
	}
	if len(src.Bouncers) != 3 || src.Bouncers[0].KeyHash != lapi.HashKey("the-key") || !src.Bouncers[1].Revoked ||
		src.Bouncers[2].AuthType != "tls" || !src.Bouncers[2].AutoCreated || src.Bouncers[0].LastPull == 0 {
		t.Errorf("bouncers: %+v", src.Bouncers)
	}
	if len(src.Alerts) != 2 {
		t.Fatalf("alerts: %+v", src.Alerts)
	}
	a := src.Alerts[0]
	if a.Alert.MachineID != "agent1" || a.Alert.UUID != "alert-uuid-1" || a.Alert.Source.Cn != "FR" || a.Alert.Source.Latitude != 48.5 ||
		a.Alert.EventsCount != 6 || a.Alert.Leakspeed != "10s" || len(a.Alert.Meta) != 1 || len(a.Alert.Events) != 1 ||
		len(a.Alert.Events[0].Meta) != 1 || a.Alert.Events[0].Meta[0].Value != "192.0.2.1" {
		t.Errorf("alert 1: %+v", a.Alert)
	}
	if len(a.Decisions) != 2 || a.Decisions[0].UUID != fsm.MustUUID("11111111-2222-4333-8444-555555555555") || a.Decisions[1].Type != "captcha" || a.Decisions[1].UUID.IsZero() || a.Decisions[1].Scope != "Ip" {
		t.Errorf("alert 1 decisions: %+v", a.Decisions)
	}
	until := a.Decisions[0].Until
	if d := time.Duration(until - now.Add(4*time.Hour).UnixNano()); d > time.Microsecond || d < -time.Microsecond {
		t.Errorf("until off by %s", d)
	}
	if src.Alerts[1].Alert.MachineID != "" || len(src.Alerts[1].Decisions) != 1 {
		t.Errorf("alert 2: %+v", src.Alerts[1])
	}
	if len(src.Allowlists) != 2 || len(src.Allowlists[0].Items) != 2 || src.Allowlists[0].Items[1].Expiration == 0 ||
		!src.Allowlists[1].ConsoleManaged || src.Allowlists[1].AllowlistID != "cl-123" {
		t.Errorf("allowlists: %+v", src.Allowlists)
	}
	want := []string{
		`machines|weird|unknown auth type "kerberos"`,
		"machines|plain|password is not a bcrypt hash",
		`bouncers|odd|unknown auth type "oauth"`,
		"decisions|ban Ip:not-an-ip (cscli, x)|invalid ip or range",
		"decisions|ban Ip:192.0.2.77 (cscli, x)|belongs to no alert",
		"decisions|1 rows|expired or deleted (until is past)",
		"allowlist items|office 10.3.0.1|expired",
		"alerts|1 alerts|no active decision (alerts are carried with their active decisions only)",
	}
	got := skipped(src.Skipped)
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("skipped lacks %q:\n%s", w, got)
		}
	}
	if len(src.Skipped) != len(want) {
		t.Errorf("skipped %d, want %d:\n%s", len(src.Skipped), len(want), got)
	}
}

// applyAll applies commands to f as raft would (validated first, as the
// leader does).
func applyAll(t *testing.T, f *fsm.FSM, cmds []fsm.Command, index *uint64) {
	t.Helper()
	for _, c := range cmds {
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", describe(c), err)
		}
		b, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		*index++
		res := f.Apply(&raft.Log{Index: *index, Type: raft.LogCommand, Data: b}).(*fsm.Result)
		if res.Err() != nil {
			t.Fatalf("%s: %v", describe(c), res.Err())
		}
	}
}

func counts(r Report) string {
	var out []string
	for _, c := range r.Counts {
		out = append(out, fmt.Sprintf("%s=%d/%d/%d", c.Kind, c.Add, c.Present, c.NotCarried))
	}
	return strings.Join(out, " ")
}

func TestPlanIsIdempotent(t *testing.T) {
	now := time.Now()
	src := readSource(t, newCrowdSecDB(t, now), now)
	src.CAPI = &Credentials{URL: "https://api.crowdsec.net/", Login: "l", Password: "p"}
	f := fsm.New(nil)
	var index uint64

	cmds, rep := Plan(f, src, now)
	want := "machines=3/0/2 bouncers=3/0/1 alerts=2/0/1 decisions=3/0/3 allowlists=2/0/0 allowlist items=3/0/1 capi credentials=1/0/0 console options=0/0/0 profiles=0/0/0"
	if got := counts(rep); got != want {
		t.Errorf("first plan:\n got %s\nwant %s", got, want)
	}
	applyAll(t, f, cmds, &index)

	if m := f.Machine("agent1"); m == nil || bcrypt.CompareHashAndPassword(m.PasswordHash, []byte("agent-pw")) != nil || !m.Validated {
		t.Errorf("agent1 after import: %+v", m)
	}
	if bs := f.BouncersByKey(lapi.HashKey("the-key")); len(bs) != 1 || bs[0].Name != "fw" {
		t.Errorf("bouncer by key: %+v", bs)
	}
	ds := f.Decisions(&fsm.DecisionFilter{IncludeSimulated: true, NoDedup: true}, now)
	if len(ds) != 3 {
		t.Fatalf("decisions: %+v", ds)
	}
	if a := f.Alert(ds[0].AlertID); a == nil || a.MachineID != "agent1" || a.UUID != "alert-uuid-1" {
		t.Errorf("alert of the first decision: %+v", a)
	}
	if al := f.Allowlist("console"); al == nil || !al.ConsoleManaged || al.AllowlistID != "cl-123" || len(al.Items) != 1 {
		t.Errorf("console allowlist: %+v", al)
	}

	cmds, rep = Plan(f, src, now.Add(time.Second))
	want = "machines=0/3/2 bouncers=0/3/1 alerts=0/2/1 decisions=0/3/3 allowlists=0/2/0 allowlist items=0/3/1 capi credentials=0/1/0 console options=0/0/0 profiles=0/0/0"
	if len(cmds) != 0 || counts(rep) != want {
		t.Errorf("second plan: %d commands\n got %s\nwant %s", len(cmds), counts(rep), want)
	}

	// other CAPI credentials in the cluster are not replaced
	src.CAPI = &Credentials{URL: "https://api.crowdsec.net/", Login: "other", Password: "p"}
	cmds, rep = Plan(f, src, now)
	if len(cmds) != 0 || rep.count(KindCAPI).NotCarried != 1 {
		t.Errorf("other credentials: %d commands, %s", len(cmds), counts(rep))
	}
}

func TestOfflineStateRestores(t *testing.T) {
	now := time.Now()
	src := readSource(t, newCrowdSecDB(t, now), now)
	state, index, rep, err := OfflineState(src, now)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Applied || index == 0 {
		t.Fatalf("offline: index %d, %+v", index, rep)
	}
	f := fsm.New(nil)
	if err := f.Restore(nopCloser{strings.NewReader(string(state))}); err != nil {
		t.Fatal(err)
	}
	if len(f.Machines()) != 3 || len(f.Decisions(&fsm.DecisionFilter{IncludeSimulated: true, NoDedup: true}, now)) != 3 {
		t.Errorf("restored: %d machines", len(f.Machines()))
	}
	if _, rep := Plan(f, src, now); rep.Changes() != 0 {
		t.Errorf("plan after the offline state: %s", counts(rep))
	}
}

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("IMPORT_TEST_DB_PASSWORD", "s3cr'et")
	p := filepath.Join(dir, "config.yaml")
	write := func(s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("config_paths:\n  config_dir: /etc/cs\n  data_dir: /var/lib/cs\ndb_config:\n  type: sqlite\napi:\n  server:\n    online_client:\n      credentials_path: /etc/cs/online.yaml\n")
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.DbPath != "/var/lib/cs/crowdsec.db" || c.ProfilesPath != "/etc/cs/profiles.yaml" || c.ConsolePath != "/etc/cs/console.yaml" || c.CredentialsPath != "/etc/cs/online.yaml" {
		t.Errorf("defaults: %+v", c)
	}
	write("db_config:\n  type: mysql\n  user: crowdsec\n  password: ${IMPORT_TEST_DB_PASSWORD}\n  host: 127.0.0.1\n  port: 3307\n  db_name: crowdsec\n")
	c, err = LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.Password != "s3cr'et" || c.CredentialsPath != "" {
		t.Errorf("mysql: %+v", c)
	}
	drv, dsn, err := c.DB.DSN()
	if err != nil || drv != "mysql" || dsn != "crowdsec:s3cr'et@tcp(127.0.0.1:3307)/crowdsec?parseTime=true" {
		t.Errorf("mysql dsn: %s %s %v", drv, dsn, err)
	}
	pg := DBConfig{Type: "postgres", User: "cs", Password: `a b'c\`, Host: "127.0.0.1", Port: 5433, DbName: "crowdsec", SSLMode: "disable"}
	if drv, dsn, _ := pg.DSN(); drv != "pgx" || dsn != `user='cs' dbname='crowdsec' password='a b\'c\\' host='127.0.0.1' port=5433 sslmode='disable'` {
		t.Errorf("pg dsn: %s %s", drv, dsn)
	}
	for _, bad := range []string{"db_config:\n  type: oracle\n", "common: {}\n", "db_config:\n  type: sqlite\n"} {
		write(bad)
		if _, err := LoadConfig(p); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestExpandDefined(t *testing.T) {
	env := map[string]string{"A": "1", "B_2": "two", "EMPTY": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for in, want := range map[string]string{
		"$A ${B_2} x":        "1 two x",
		"pa$$word $UNSET":    "pa$$word $UNSET",
		"${UNSET} ${A":       "${UNSET} ${A",
		"[$EMPTY] $A$A end$": "[] 11 end$",
		"${}":                "${}",
	} {
		if got := expandDefined(in, lookup); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// config.yaml.local is merged over config.yaml as CrowdSec merges it
// (mappings key by key), before the values are read; scalars keep their
// written form (a numeric-looking password stays a string).
func TestLoadConfigLocal(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte("db_config:\n  type: mysql\n  user: cs\n  password: \"0123\"\n  host: db1\napi:\n  server:\n    profiles_path: /a/profiles.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".local", []byte("db_config:\n  host: db2\n  port: 3307\n  password: 0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DB.Host != "db2" || c.DB.Port != 3307 || c.DB.User != "cs" || c.DB.Password != "0123" || c.ProfilesPath != "/a/profiles.yaml" {
		t.Fatalf("merged: %+v", c)
	}
	if err := os.WriteFile(p+".local", []byte("db_config: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), p+".local") {
		t.Fatalf("bad .local: %v", err)
	}
}
