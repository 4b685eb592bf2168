package importer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"fmt"
	"github.com/google/uuid"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	_ "modernc.org/sqlite"             // registers "sqlite"
)

// Dialects.
const (
	SQLite   = "sqlite"
	MySQL    = "mysql"
	Postgres = "pgx"
)

// Dialect returns the SQL dialect of a db_config type.
func (d DBConfig) Dialect() (string, error) {
	switch d.Type {
	case "sqlite":
		return SQLite, nil
	case "mysql":
		return MySQL, nil
	case "postgres", "postgresql", "pgx":
		return Postgres, nil
	}
	return "", fmt.Errorf("unknown db_config type %q", d.Type)
}

// socket reports whether db_path names a unix socket (CrowdSec: no host
// and no port but a db_path).
func (d DBConfig) socket() bool { return d.Host == "" && d.Port == 0 && d.DbPath != "" }

func pgQuote(v string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}

// DSN returns the driver name and connection string. The SQLite database
// is opened read-only.
func (d DBConfig) DSN() (driver, dsn string, err error) {
	dialect, err := d.Dialect()
	if err != nil {
		return "", "", err
	}
	switch dialect {
	case SQLite:
		if _, err := os.Stat(d.DbPath); err != nil {
			return "", "", fmt.Errorf("sqlite database: %w", err)
		}
		return "sqlite", "file:" + d.DbPath + "?mode=ro&_pragma=busy_timeout(10000)", nil
	case MySQL:
		c := mysql.NewConfig()
		c.User, c.Passwd, c.DBName, c.ParseTime = d.User, d.Password, d.DbName, true
		c.Loc = time.UTC
		if d.socket() {
			c.Net, c.Addr = "unix", d.DbPath
		} else {
			port := d.Port
			if port == 0 {
				port = 3306
			}
			c.Net, c.Addr = "tcp", net.JoinHostPort(d.Host, strconv.Itoa(port))
		}
		if d.SSLMode != "" {
			c.TLSConfig = d.SSLMode
		}
		if d.SSLCACert != "" || (d.SSLClientCert != "" && d.SSLClientKey != "") {
			tc := &tls.Config{ServerName: d.Host}
			if d.SSLCACert != "" {
				pem, err := os.ReadFile(d.SSLCACert)
				if err != nil {
					return "", "", err
				}
				tc.RootCAs = x509.NewCertPool()
				if !tc.RootCAs.AppendCertsFromPEM(pem) {
					return "", "", fmt.Errorf("%s: no certificate", d.SSLCACert)
				}
			}
			if d.SSLClientCert != "" && d.SSLClientKey != "" {
				cert, err := tls.LoadX509KeyPair(d.SSLClientCert, d.SSLClientKey)
				if err != nil {
					return "", "", err
				}
				tc.Certificates = []tls.Certificate{cert}
			}
			if err := mysql.RegisterTLSConfig("halapi-import", tc); err != nil {
				return "", "", err
			}
			c.TLSConfig = "halapi-import"
		}
		return "mysql", c.FormatDSN(), nil
	default:
		parts := []string{"user=" + pgQuote(d.User), "dbname=" + pgQuote(d.DbName), "password=" + pgQuote(d.Password)}
		if d.socket() {
			parts = append(parts, "host="+pgQuote(d.DbPath))
		} else {
			parts = append(parts, "host="+pgQuote(d.Host))
			if d.Port != 0 {
				parts = append(parts, "port="+strconv.Itoa(d.Port))
			}
		}
		if d.SSLMode != "" {
			parts = append(parts, "sslmode="+pgQuote(d.SSLMode))
		}
		if d.SSLCACert != "" {
			parts = append(parts, "sslrootcert="+pgQuote(d.SSLCACert))
		}
		if d.SSLClientCert != "" && d.SSLClientKey != "" {
			parts = append(parts, "sslcert="+pgQuote(d.SSLClientCert), "sslkey="+pgQuote(d.SSLClientKey))
		}
		return "pgx", strings.Join(parts, " "), nil
	}
}

// Open opens the database of a db_config and checks that it answers.
func Open(ctx context.Context, d DBConfig) (*sql.DB, string, error) {
	dialect, err := d.Dialect()
	if err != nil {
		return nil, "", err
	}
	driver, dsn, err := d.DSN()
	if err != nil {
		return nil, "", err
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		return nil, "", err
	}
	db.SetMaxOpenConns(2)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, "", fmt.Errorf("%s database: %w", d.Type, err)
	}
	return db, dialect, nil
}

// reader runs the queries of one read.
type reader struct {
	ctx     context.Context
	db      *sql.DB
	dialect string
	now     time.Time
	src     *Source
}

// q quotes an identifier for the dialect (several columns are keywords:
// key, value, type, until).
func (r *reader) q(name string) string {
	if r.dialect == MySQL {
		return "`" + name + "`"
	}
	return `"` + name + `"`
}

func (r *reader) cols(names ...string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = r.q(n)
	}
	return strings.Join(out, ", ")
}

// each runs a query and calls fn with every row's values.
func (r *reader) each(query string, n int, fn func(v []any) error) error {
	rows, err := r.db.QueryContext(r.ctx, query)
	if err != nil {
		return fmt.Errorf("%s: %w", query, err)
	}
	defer rows.Close()
	vals := make([]any, n)
	ptrs := make([]any, n)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		if err := fn(vals); err != nil {
			return err
		}
	}
	return rows.Err()
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	default:
		return fmt.Sprint(x)
	}
}

func integer(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case int32:
		return int64(x)
	case int:
		return int64(x)
	case float64:
		return int64(x)
	case bool:
		if x {
			return 1
		}
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(str(v)), 10, 64)
	return n
}

func float(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case float32:
		return float64(x)
	case int64:
		return float64(x)
	}
	f, _ := strconv.ParseFloat(strings.TrimSpace(str(v)), 64)
	return f
}

func boolean(v any) bool {
	switch x := v.(type) {
	case bool:
		return x
	case nil:
		return false
	}
	s := strings.ToLower(strings.TrimSpace(str(v)))
	return s == "1" || s == "true" || s == "t"
}

// timeLayouts are the text forms SQLite drivers store times in (mattn's
// go-sqlite3, which CrowdSec uses, and modernc).
var timeLayouts = []string{
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02T15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999 -0700 MST",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04",
	"2006-01-02",
}

// when converts a time column; ok is false for NULL or unreadable values.
func when(v any) (time.Time, bool) {
	switch x := v.(type) {
	case nil:
		return time.Time{}, false
	case time.Time:
		return x, true
	case int64:
		return time.Unix(x, 0), true
	}
	s := strings.TrimSpace(str(v))
	if s == "" {
		return time.Time{}, false
	}
	// modernc appends the monotonic clock reading of time.Time.String
	if i := strings.Index(s, " m="); i > 0 {
		s = s[:i]
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func ns(v any) int64 {
	t, ok := when(v)
	if !ok {
		return 0
	}
	return fsm.UnixNano(t)
}

// Read reads everything import carries from an open CrowdSec database.
// Decisions are carried when active at now; their alerts come with them.
func Read(ctx context.Context, db *sql.DB, dialect string, now time.Time) (*Source, error) {
	r := &reader{ctx: ctx, db: db, dialect: dialect, now: now, src: &Source{}}
	machineIDs, err := r.machines()
	if err != nil {
		return nil, fmt.Errorf("machines: %w", err)
	}
	if err := r.bouncers(); err != nil {
		return nil, fmt.Errorf("bouncers: %w", err)
	}
	if err := r.decisions(machineIDs); err != nil {
		return nil, fmt.Errorf("decisions: %w", err)
	}
	if err := r.allowlists(); err != nil {
		return nil, fmt.Errorf("allowlists: %w", err)
	}
	return r.src, nil
}

func (r *reader) machines() (map[int64]string, error) {
	ids := map[int64]string{}
	query := "SELECT " + r.cols("id", "machine_id", "password", "ip_address", "scenarios", "version", "is_validated",
		"auth_type", "osname", "osversion", "featureflags", "last_push", "last_heartbeat", "hubstate", "datasources") + " FROM " + r.q("machines")
	err := r.each(query, 15, func(v []any) error {
		m := fsm.Machine{ID: str(v[1]), PasswordHash: []byte(str(v[2])), IP: str(v[3]), Scenarios: str(v[4]),
			Version: str(v[5]), Validated: boolean(v[6]), AuthType: str(v[7]), OSName: str(v[8]), OSVersion: str(v[9]),
			FeatureFlags: str(v[10]), LastPush: ns(v[11]), LastHeartbeat: ns(v[12])}
		if hs := str(v[13]); hs != "" && hs != "null" && json.Valid([]byte(hs)) {
			m.HubState = []byte(hs)
		}
		if ds := str(v[14]); ds != "" && ds != "null" && json.Valid([]byte(ds)) {
			m.Datasources = []byte(ds)
		}
		ids[integer(v[0])] = m.ID
		switch {
		case m.ID == "":
			r.src.Skipped = append(r.src.Skipped, Skip{KindMachines, fmt.Sprintf("row id %d", integer(v[0])), "empty machine id"})
		case m.AuthType != fsm.AuthPassword && m.AuthType != fsm.AuthTLS:
			r.src.Skipped = append(r.src.Skipped, Skip{KindMachines, m.ID, fmt.Sprintf("unknown auth type %q", m.AuthType)})
		case m.AuthType == fsm.AuthPassword && !strings.HasPrefix(str(v[2]), "$2"):
			r.src.Skipped = append(r.src.Skipped, Skip{KindMachines, m.ID, "password is not a bcrypt hash"})
		default:
			r.src.Machines = append(r.src.Machines, m)
		}
		return nil
	})
	return ids, err
}

func (r *reader) bouncers() error {
	query := "SELECT " + r.cols("name", "api_key", "revoked", "ip_address", "type", "version", "last_pull",
		"auth_type", "osname", "osversion", "featureflags", "auto_created") + " FROM " + r.q("bouncers")
	return r.each(query, 12, func(v []any) error {
		b := fsm.Bouncer{Name: str(v[0]), KeyHash: str(v[1]), Revoked: boolean(v[2]), IP: str(v[3]), Type: str(v[4]),
			Version: str(v[5]), LastPull: ns(v[6]), AuthType: str(v[7]), OSName: str(v[8]), OSVersion: str(v[9]),
			FeatureFlags: str(v[10]), AutoCreated: boolean(v[11])}
		switch {
		case b.Name == "":
			r.src.Skipped = append(r.src.Skipped, Skip{KindBouncers, "(no name)", "empty bouncer name"})
		case b.AuthType != fsm.AuthAPIKey && b.AuthType != fsm.AuthTLS:
			r.src.Skipped = append(r.src.Skipped, Skip{KindBouncers, b.Name, fmt.Sprintf("unknown auth type %q", b.AuthType)})
		default:
			r.src.Bouncers = append(r.src.Bouncers, b)
		}
		return nil
	})
}

// inList is "(1,2,3)" for IDs read from the database itself.
func inList(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return "(" + strings.Join(s, ",") + ")"
}

func chunks(ids []int64, n int) [][]int64 {
	var out [][]int64
	for len(ids) > n {
		out = append(out, ids[:n])
		ids = ids[n:]
	}
	if len(ids) > 0 {
		out = append(out, ids)
	}
	return out
}

func (r *reader) decisions(machineIDs map[int64]string) error {
	nowNs := r.now.UnixNano()
	byAlert := map[int64][]fsm.Decision{}
	expired := 0
	query := "SELECT " + r.cols("id", "until", "scenario", "type", "scope", "value", "origin", "simulated", "uuid",
		"alert_decisions", "created_at") + " FROM " + r.q("decisions") + " ORDER BY " + r.q("id")
	err := r.each(query, 11, func(v []any) error {
		// scopes as halapi's API stores them (older CrowdSec wrote "ip")
		d := fsm.Decision{Scenario: str(v[2]), Type: str(v[3]), Scope: models.NormalizeScope(str(v[4])), Value: str(v[5]), Origin: str(v[6]),
			Simulated: boolean(v[7]), UUID: importUUID(str(v[8]))}
		name := fmt.Sprintf("%s %s:%s (%s, %s)", d.Type, d.Scope, d.Value, d.Origin, d.Scenario)
		until, ok := when(v[1])
		switch {
		case !ok:
			r.src.Skipped = append(r.src.Skipped, Skip{KindDecisions, name, "no expiry (until is empty)"})
			return nil
		case fsm.UnixNano(until) <= nowNs:
			expired++
			return nil
		case v[9] == nil:
			r.src.Skipped = append(r.src.Skipped, Skip{KindDecisions, name, "belongs to no alert"})
			return nil
		}
		if fsm.IsIPScope(d.Scope) {
			if _, err := fsm.ParseRange(d.Value); err != nil {
				r.src.Skipped = append(r.src.Skipped, Skip{KindDecisions, name, "invalid ip or range"})
				return nil
			}
		}
		d.Until = fsm.UnixNano(until)
		d.CreatedAt = ns(v[10])
		a := integer(v[9])
		byAlert[a] = append(byAlert[a], d)
		return nil
	})
	if err != nil {
		return err
	}
	if expired > 0 {
		r.src.Skipped = append(r.src.Skipped, Skip{KindDecisions, fmt.Sprintf("%d rows", expired), "expired or deleted (until is past)"})
	}
	ids := make([]int64, 0, len(byAlert))
	for id := range byAlert {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	alerts := map[int64]*fsm.Alert{}
	for _, chunk := range chunks(ids, 500) {
		query := "SELECT " + r.cols("id", "created_at", "scenario", "message", "events_count", "started_at", "stopped_at",
			"source_ip", "source_range", "source_as_number", "source_as_name", "source_country", "source_latitude",
			"source_longitude", "source_scope", "source_value", "capacity", "leak_speed", "scenario_version",
			"scenario_hash", "simulated", "uuid", "remediation", "machine_alerts") +
			" FROM " + r.q("alerts") + " WHERE " + r.q("id") + " IN " + inList(chunk)
		err := r.each(query, 24, func(v []any) error {
			a := &fsm.Alert{UUID: str(v[21]), CreatedAt: ns(v[1]), Scenario: str(v[2]), Message: str(v[3]),
				EventsCount: int32(integer(v[4])), StartAt: ns(v[5]), StopAt: ns(v[6]),
				Source: fsm.Source{IP: str(v[7]), Range: str(v[8]), AsNumber: str(v[9]), AsName: str(v[10]), Cn: str(v[11]),
					Latitude: float32(float(v[12])), Longitude: float32(float(v[13])), Scope: models.NormalizeScope(str(v[14])), Value: str(v[15])},
				Capacity: int32(integer(v[16])), Leakspeed: str(v[17]), ScenarioVersion: str(v[18]), ScenarioHash: str(v[19]),
				Simulated: boolean(v[20]), Remediation: boolean(v[22])}
			if v[23] != nil {
				a.MachineID = machineIDs[integer(v[23])]
			}
			alerts[integer(v[0])] = a
			return nil
		})
		if err != nil {
			return err
		}
		query = "SELECT " + r.cols("key", "value", "alert_metas") + " FROM " + r.q("meta") + " WHERE " + r.q("alert_metas") +
			" IN " + inList(chunk) + " ORDER BY " + r.q("id")
		err = r.each(query, 3, func(v []any) error {
			if a := alerts[integer(v[2])]; a != nil {
				a.Meta = append(a.Meta, fsm.KV{Key: str(v[0]), Value: str(v[1])})
			}
			return nil
		})
		if err != nil {
			return err
		}
		query = "SELECT " + r.cols("time", "serialized", "alert_events") + " FROM " + r.q("events") + " WHERE " + r.q("alert_events") +
			" IN " + inList(chunk) + " ORDER BY " + r.q("id")
		err = r.each(query, 3, func(v []any) error {
			a := alerts[integer(v[2])]
			if a == nil {
				return nil
			}
			ev := fsm.Event{Timestamp: ns(v[0])}
			var meta []fsm.KV
			if json.Unmarshal([]byte(str(v[1])), &meta) == nil {
				ev.Meta = meta
			}
			a.Events = append(a.Events, ev)
			return nil
		})
		if err != nil {
			return err
		}
	}
	total := 0
	err = r.each("SELECT COUNT(*) FROM "+r.q("alerts"), 1, func(v []any) error {
		total = int(integer(v[0]))
		return nil
	})
	if err != nil {
		return err
	}
	if n := total - len(alerts); n > 0 {
		r.src.Skipped = append(r.src.Skipped, Skip{KindAlerts, fmt.Sprintf("%d alerts", n),
			"no active decision (alerts are carried with their active decisions only)"})
	}
	for _, id := range ids {
		a := alerts[id]
		ds := byAlert[id]
		if a == nil {
			for _, d := range ds {
				r.src.Skipped = append(r.src.Skipped, Skip{KindDecisions, fmt.Sprintf("%s %s:%s (%s, %s)", d.Type, d.Scope, d.Value, d.Origin, d.Scenario),
					fmt.Sprintf("its alert %d is missing", id)})
			}
			continue
		}
		r.src.Alerts = append(r.src.Alerts, SourceAlert{Alert: *a, Decisions: ds})
	}
	return nil
}

func (r *reader) allowlists() error {
	lists := map[int64]*fsm.Allowlist{}
	var order []int64
	query := "SELECT " + r.cols("id", "name", "from_console", "description", "allowlist_id", "created_at") + " FROM " + r.q("allow_lists") + " ORDER BY " + r.q("id")
	err := r.each(query, 6, func(v []any) error {
		id := integer(v[0])
		lists[id] = &fsm.Allowlist{Name: str(v[1]), ConsoleManaged: boolean(v[2]), Description: str(v[3]),
			AllowlistID: str(v[4]), CreatedAt: ns(v[5])}
		order = append(order, id)
		return nil
	})
	if err != nil {
		return err
	}
	query = "SELECT j." + r.q("allow_list_id") + ", i." + r.q("value") + ", i." + r.q("comment") + ", i." + r.q("expires_at") +
		", i." + r.q("created_at") + " FROM " + r.q("allow_list_items") + " i JOIN " + r.q("allow_list_allowlist_items") +
		" j ON j." + r.q("allow_list_item_id") + " = i." + r.q("id") + " ORDER BY i." + r.q("id")
	nowNs := r.now.UnixNano()
	err = r.each(query, 5, func(v []any) error {
		al := lists[integer(v[0])]
		if al == nil {
			return nil
		}
		it := fsm.AllowlistItem{Value: str(v[1]), Comment: str(v[2]), Expiration: ns(v[3]), CreatedAt: ns(v[4])}
		name := al.Name + " " + it.Value
		if it.Expiration != 0 && it.Expiration <= nowNs {
			r.src.Skipped = append(r.src.Skipped, Skip{KindAllowlistItems, name, "expired"})
			return nil
		}
		if _, err := fsm.ParseRange(it.Value); err != nil {
			r.src.Skipped = append(r.src.Skipped, Skip{KindAllowlistItems, name, "invalid ip or range"})
			return nil
		}
		al.Items = append(al.Items, it)
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range order {
		al := lists[id]
		if al.Name == "" {
			r.src.Skipped = append(r.src.Skipped, Skip{KindAllowlists, fmt.Sprintf("row id %d", id), "empty name"})
			continue
		}
		r.src.Allowlists = append(r.src.Allowlists, *al)
	}
	return nil
}

// importUUID keeps a decision's UUID when it is canonical (CrowdSec writes
// uuid.NewString) and gives it a new one otherwise: halapi stores UUIDs as
// 16 bytes, and a decision without one would lose it in streams.
func importUUID(s string) fsm.UUID {
	if u, err := fsm.ParseUUID(s); err == nil && !u.IsZero() {
		return u
	}
	return fsm.UUID(uuid.New())
}
