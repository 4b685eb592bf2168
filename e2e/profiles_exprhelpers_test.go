package e2e

// Differential test of the profile expression environment: CrowdSec
// v1.7.6's own pkg/exprhelpers (and pkg/csprofiles for whole profiles) and
// halapi's lapi/profiles evaluate the same expressions over the same alerts
// with the same outside data (data files, GeoIP databases written here, a
// fake CTI server on loopback, a stash) and must agree. Both run in this
// process: the e2e module requires the root module (replace ../), which MVS
// resolves to a build where both compile.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/halapi/halapi/internal/testutil"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/appsec/ja4h"
	"github.com/crowdsecurity/crowdsec/pkg/cache"
	"github.com/crowdsecurity/crowdsec/pkg/csconfig"
	"github.com/crowdsecurity/crowdsec/pkg/csprofiles"
	"github.com/crowdsecurity/crowdsec/pkg/cticlient/ctiexpr"
	"github.com/crowdsecurity/crowdsec/pkg/exprhelpers"
	csmodels "github.com/crowdsecurity/crowdsec/pkg/models"
	"github.com/expr-lang/expr"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	log "github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/halapi/halapi/lapi/models"
	"github.com/halapi/halapi/lapi/profiles"
)

const diffCTIKey = "diff-cti-key"

// diffAlerts are the alerts both sides evaluate, as agents send them.
var diffAlerts = map[string]string{
	"ipv4": `{"scenario":"crowdsecurity/http-probing","scenario_hash":"h","scenario_version":"0.1","message":"probing",
		"capacity":10,"leakspeed":"10s","events_count":12,"remediation":true,"simulated":false,
		"start_at":"2025-06-01T11:00:00Z","stop_at":"2025-06-01T11:02:00Z",
		"source":{"scope":"Ip","value":"1.2.3.4","ip":"1.2.3.4","as_number":"16276","as_name":"OVH SAS","cn":"FR","latitude":48.85,"longitude":2.35},
		"meta":[{"key":"service","value":"http"},{"key":"target_uri","value":"/login?user=admin&pw=1' OR '1'='1"},
			{"key":"user_agent","value":"curl/8.1"},{"key":"xml","value":"<r><u id=\"7\" name=\"bob\">text</u></r>"},
			{"key":"kv","value":"user=bob action=\"log in\" empty= n=1"},{"key":"json","value":"{\"a\":{\"b\":[1,\"x\"]}}"}],
		"events":[{"timestamp":"2025-06-01T11:00:00Z","meta":[{"key":"status","value":"404"}]},
			{"timestamp":"2025-06-01T11:01:00Z","meta":[{"key":"status","value":"403"}]}]}`,
	"ipv6": `{"scenario":"crowdsecurity/ssh-bf","scenario_hash":"h","scenario_version":"0.1","message":"ssh",
		"capacity":5,"leakspeed":"10s","events_count":6,"remediation":true,"simulated":false,
		"start_at":"2025-06-01T11:00:00Z","stop_at":"2025-06-01T11:02:00Z",
		"source":{"scope":"Ip","value":"2a01:4f8::1","ip":"2a01:4f8::1","cn":"DE","as_number":"24940"},
		"meta":[{"key":"service","value":"ssh"}],"events":[]}`,
	"range": `{"scenario":"crowdsecurity/ssh-bf","scenario_hash":"h","scenario_version":"0.1","message":"range",
		"capacity":5,"leakspeed":"10s","events_count":6,"remediation":true,"simulated":true,
		"start_at":"2025-06-01T11:00:00Z","stop_at":"2025-06-01T11:02:00Z",
		"source":{"scope":"Range","value":"1.2.3.0/24","range":"1.2.3.0/24"},"events":[]}`,
	"unicode": `{"scenario":"crowdsecurity/ünïcödé-😀","scenario_hash":"h","scenario_version":"0.1","message":"ünï",
		"capacity":5,"leakspeed":"10s","events_count":1,"remediation":false,"simulated":false,
		"start_at":"2025-06-01T11:00:00Z","stop_at":"2025-06-01T11:02:00Z",
		"source":{"scope":"Ip","value":"::ffff:1.2.3.9","cn":"ÉÜ","as_name":"Ünïcode AS"},
		"meta":[{"key":"user_agent","value":"Mozilla ÑIKTO 😀"},{"key":"kv","value":"clé=valeur ü=\"ö ä\""}],"events":[]}`,
	"empty": `{"scenario":"","scenario_hash":"","scenario_version":"","message":"",
		"capacity":0,"leakspeed":"","events_count":0,"remediation":false,"simulated":false,
		"start_at":"","stop_at":"","source":{"scope":"","value":""},"events":[]}`,
	"country": `{"scenario":"crowdsecurity/geo-block","scenario_hash":"h","scenario_version":"0.1","message":"geo",
		"capacity":0,"leakspeed":"0","events_count":1,"remediation":true,"simulated":false,
		"start_at":"2025-06-01T11:00:00Z","stop_at":"2025-06-01T11:02:00Z",
		"source":{"scope":"Country","value":"CN"},"events":[]}`,
	"custom-scope": `{"scenario":"crowdsecurity/ssh-enforce-mfa","scenario_hash":"h","scenario_version":"0.1","message":"mfa",
		"capacity":5,"leakspeed":"10s","events_count":3,"remediation":true,"simulated":false,
		"start_at":"2025-06-01T11:00:00Z","stop_at":"2025-06-01T11:02:00Z",
		"source":{"scope":"username","value":"bob"},"events":[]}`,
}

// diffExprs cover every helper of the reference (expr_lib.go) and the alert
// methods, on the alert's own values and on edge cases.
var diffExprs = []string{
	// alert and its methods
	`Alert.GetScope()`, `Alert.GetValue()`, `Alert.GetScenario()`, `Alert.GetEventsCount()`, `Alert.GetMeta("service")`,
	`Alert.GetMeta("nope")`, `Alert.Source.GetAsNumberName()`, `Alert.Source.String()`, `Alert.Remediation`,
	`Alert.FormatAsStrings("m1", nil)`, `Alert.FormatAsStrings("", nil)`, `len(Alert.Events)`,
	`map(Alert.Events, {.GetMeta("status")})`, `Alert.Source.Cn`, `Alert.Simulated`,
	// IP
	`IpInRange(Alert.GetValue(), "1.2.3.0/24")`, `IpInRange(Alert.GetValue(), "2a01:4f8::/32")`, `IpInRange(Alert.GetValue(), "bad")`,
	`IpToRange(Alert.GetValue(), "/16")`, `IpToRange(Alert.GetValue(), "64")`, `IpToRange(Alert.GetValue(), "x")`,
	`IsIPV4(Alert.GetValue())`, `IsIPV6(Alert.GetValue())`, `IsIP(Alert.GetValue())`,
	// decisions database (none on either side)
	`GetDecisionsCount(Alert.GetValue())`, `GetDecisionsSinceCount(Alert.GetValue(), "7h")`, `GetActiveDecisionsCount(Alert.GetValue())`,
	`GetActiveDecisionsTimeLeft(Alert.GetValue())`, `Sprintf('%dh', (GetDecisionsCount(Alert.GetValue()) + 1) * 4)`,
	// strings
	`Upper(Alert.GetScenario())`, `Lower(Alert.Source.Cn)`, `Fields(Alert.GetMeta("kv"))`, `Index(Alert.GetScenario(), "/")`,
	`IndexAny(Alert.GetScenario(), "ü/")`, `Join(Split(Alert.GetScenario(), "/"), "|")`, `SplitAfter(Alert.GetScenario(), "/")`,
	`SplitAfterN(Alert.GetScenario(), "-", 2)`, `SplitN(Alert.GetScenario(), "/", 1)`, `Replace(Alert.GetScenario(), "s", "S", 2)`,
	`ReplaceAll(Alert.GetScenario(), "s", "S")`, `Trim(Alert.GetScenario(), "c")`, `TrimLeft(Alert.GetScenario(), "cr")`,
	`TrimRight(Alert.GetScenario(), "g")`, `TrimSpace("  " + Alert.GetValue() + "\t")`, `TrimPrefix(Alert.GetScenario(), "crowdsecurity/")`,
	`TrimSuffix(Alert.GetScenario(), "-bf")`, `Get(Split(Alert.GetScenario(), "/"), 1)`, `Get(Split(Alert.GetScenario(), "/"), 5)`,
	`ToString(Alert.GetValue())`, `ToString(1)`, `Match("crowdsecurity/*", Alert.GetScenario())`, `Match("?", Alert.GetValue())`,
	`KeyExists("a", {"a": Alert.GetValue()})`, `B64Decode("w7xuw68=")`, `Sprintf("%s/%d", Alert.GetValue(), 3)`,
	`LogInfo("alert %s", Alert.GetValue())`,
	// numbers, time
	`Atof("3.5")`, `Atof(Alert.GetValue())`, `FloatApproxEqual(Atof("0.1") + Atof("0.2"), 0.3)`, `ParseUnix("1717236000")`,
	`ParseUnix("-5")`, `Distance("48.85", "2.35", "52.52", "13.40")`, `Distance("0", "0", "1", "1")`,
	`AverageInterval(map(Alert.Events, {date(.Timestamp)}))`, `MedianInterval(map(Alert.Events, {date(.Timestamp)}))`,
	`len(TimeNow()) > 0`, `Hostname() != ""`,
	// URLs
	`ParseUri(Alert.GetMeta("target_uri"))`, `ParseQuery("a=1&a=2&b=%zz;c")`, `ExtractQueryParam(Alert.GetMeta("target_uri"), "user")`,
	`ExtractQueryParam("/x", "user")`, `PathUnescape("a%20b%zz")`, `QueryUnescape("a+b%C3%BC")`, `PathEscape(Alert.GetScenario())`,
	`QueryEscape(Alert.GetScenario())`,
	// JSON
	`JsonExtract(Alert.GetMeta("json"), "a.b[1]")`, `JsonExtract(Alert.GetMeta("json"), "a.b")`, `JsonExtractUnescape(Alert.GetMeta("json"), "a", "b", "[1]")`,
	`JsonExtractLib(Alert.GetMeta("json"), "a", "b")`, `JsonExtractSlice(Alert.GetMeta("json"), "a.b")`, `JsonExtractObject(Alert.GetMeta("json"), "a")`,
	`ToJsonString(Alert.Source.Cn)`, `let m = {}; UnmarshalJSON(Alert.GetMeta("json"), m, "j") ?? m.j`,
	// lists
	`Flatten([1, [2, [Alert.GetValue()]]])`, `Distinct([Alert.GetValue(), Alert.GetValue()])`, `FlattenDistinct([[1, 1], 1, [Alert.GetValue()]])`,
	// XML, KV
	`XMLGetAttributeValue(Alert.GetMeta("xml"), "/r/u", "name")`, `XMLGetAttributeValue(Alert.GetMeta("xml"), "//u[@id='7']", "id")`,
	`XMLGetNodeValue(Alert.GetMeta("xml"), "/r/u")`, `XMLGetNodeValue(Alert.GetMeta("xml"), "/nope")`,
	`let m = {}; ParseKV(Alert.GetMeta("kv"), m, "kv") ?? m.kv`, `let m = {}; ParseKVLax(Alert.GetMeta("kv"), m, "kv") ?? m.kv`,
	// libinjection, JA4H, DNS
	`LibInjectionIsSQLI(Alert.GetMeta("target_uri"))`, `LibInjectionIsSQLI(Alert.GetScenario())`,
	`LibInjectionIsXSS("<script>" + Alert.GetValue() + "</script>")`, `LibInjectionIsXSS(Alert.GetValue())`, `JA4H(nil)`,
	`LookupHost("localhost")`, // /etc/hosts: no DNS server needed
	// data files
	`File("ips.txt")`, `Alert.GetValue() in File("ips.txt")`, `File("missing.txt")`,
	`RegexpInFile(Alert.GetMeta("user_agent"), "ua.regex")`, `RegexpInFile(Alert.GetValue(), "ua.regex")`, `RegexpInFile("x", "missing.regex")`,
	// stash (preset on both sides)
	`GetFromStash("seen", "pre")`, `GetFromStash("seen", Alert.GetValue())`, `GetFromStash("undeclared", "pre")`,
	// GeoIP
	`GeoIPEnrich(Alert.GetValue())`, `GeoIPEnrich(Alert.GetValue()).Country.IsoCode`, `GeoIPEnrich(Alert.GetValue()).City.Names["en"]`,
	`GeoIPASNEnrich(Alert.GetValue())`, `GeoIPASNEnrich(Alert.GetValue()).AutonomousSystemNumber`, `GeoIPRangeEnrich(Alert.GetValue())`,
	`GeoIPEnrich("9.9.9.9")`, `GeoIPRangeEnrich("9.9.9.9") == nil`, `GeoIPEnrich("2a01:4f8:ffff::1").Country.Names`,
	// CTI
	`CrowdsecCTI(Alert.GetValue())`, `CrowdsecCTI(Alert.GetValue()).GetMaliciousnessScore()`,
	`CrowdsecCTI(Alert.GetValue()).GetBackgroundNoiseScore() > 6 && !CrowdsecCTI(Alert.GetValue()).IsFalsePositive()`,
	`CrowdsecCTI(Alert.GetValue()).GetBehaviors()`, `CrowdsecCTI(Alert.GetValue()).GetAttackDetails()`,
	`CrowdsecCTI(Alert.GetValue()).GetClassifications()`, `CrowdsecCTI(Alert.GetValue()).GetFalsePositives()`,
	`CrowdsecCTI(Alert.GetValue()).IsPartOfCommunityBlocklist()`, `CrowdsecCTI("6.6.6.6")`,
	// compile errors on both sides
	`Frobnicate(1)`, `IpInRange(1, 2)`, `Alert.Nope`,
}

// knownDifferences are the deliberate ones (notes/exprhelpers.md): the
// reference fails, halapi answers.
var knownDifferences = map[string]string{
	// alerts with decisions only: the reference dereferences the nil logger
	`Alert.FormatAsStrings("m1", nil)#decisions`: "the reference panics on a nil logger when the alert has decisions",
	`SetInStash("seen", "k", "v", nil)`:          "the reference's type assertion on the nil expiration fails",
}

func writeDiffGeoIP(t *testing.T, dir string) {
	t.Helper()
	write := func(name, dbType string, entries map[string]mmdbtype.Map) {
		testutil.WriteMMDB(t, filepath.Join(dir, name), dbType, entries)
	}
	names := func(kv ...string) mmdbtype.Map {
		m := mmdbtype.Map{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[mmdbtype.String(kv[i])] = mmdbtype.String(kv[i+1])
		}
		return m
	}
	write("GeoLite2-City.mmdb", "GeoLite2-City", map[string]mmdbtype.Map{
		"1.2.3.0/24": {
			"city":         mmdbtype.Map{"names": names("en", "Paris", "fr", "Paris"), "geoname_id": mmdbtype.Uint32(2988507)},
			"continent":    mmdbtype.Map{"code": mmdbtype.String("EU"), "names": names("en", "Europe")},
			"country":      mmdbtype.Map{"iso_code": mmdbtype.String("FR"), "names": names("en", "France"), "is_in_european_union": mmdbtype.Bool(true)},
			"location":     mmdbtype.Map{"latitude": mmdbtype.Float64(48.8566), "longitude": mmdbtype.Float64(2.3522), "time_zone": mmdbtype.String("Europe/Paris"), "accuracy_radius": mmdbtype.Uint16(10)},
			"postal":       mmdbtype.Map{"code": mmdbtype.String("75001")},
			"subdivisions": mmdbtype.Slice{mmdbtype.Map{"iso_code": mmdbtype.String("IDF"), "names": names("en", "Île-de-France")}},
		},
		"2a01:4f8::/32": {"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE"), "names": names("de", "Deutschland", "ja", "ドイツ")}},
	})
	write("GeoLite2-ASN.mmdb", "GeoLite2-ASN", map[string]mmdbtype.Map{
		"1.2.0.0/16":    {"autonomous_system_number": mmdbtype.Uint32(16276), "autonomous_system_organization": mmdbtype.String("OVH SAS")},
		"2a01:4f8::/29": {"autonomous_system_number": mmdbtype.Uint32(24940), "autonomous_system_organization": mmdbtype.String("Hetzner Ünïcode")},
	})
}

// fakeCTI answers the smoke endpoint like the CTI API, on loopback, for the
// rest of the test binary (both sides' clients keep pointing at it).
func fakeCTI() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != diffCTIKey {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		items := map[string]any{
			"1.2.3.4": map[string]any{"ip": "1.2.3.4", "reputation": "malicious", "ip_range": "1.2.3.0/24", "as_num": 16276,
				"background_noise_score": 8, "location": map[string]any{"country": "FR", "latitude": 48.85},
				"behaviors":        []map[string]any{{"name": "http:scan", "label": "HTTP Scan"}},
				"attack_details":   []map[string]any{{"name": "crowdsecurity/http-probing", "references": []string{"x"}}},
				"classifications":  map[string]any{"classifications": []map[string]any{{"name": "community-blocklist"}}, "false_positives": []any{}},
				"scores":           map[string]any{"overall": map[string]any{"total": 4}, "last_day": map[string]any{"total": 5}},
				"target_countries": map[string]int{"FR": 60, "DE": 40}, "cves": []string{"CVE-2024-1"}},
			"2a01:4f8::1": map[string]any{"ip": "2a01:4f8::1", "as_name": "Hetzner Ünïcode", "scores": map[string]any{"last_day": map[string]any{"total": 2}},
				"classifications": map[string]any{"false_positives": []map[string]any{{"name": "seo:crawler"}}}},
		}
		ip := strings.TrimPrefix(r.URL.Path, "/v2/smoke/")
		if ip == "6.6.6.6" {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		it, ok := items[ip]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(it)
	}))
}

// ctiTransport is http.DefaultTransport with the reference's requests for
// the CTI API (its URL is a constant, https) sent to the fake server: the
// "TLS" dial for that host returns a plain connection to it. It stays an
// *http.Transport: crowdsec's apiclient, used by tests running at the same
// time, type-asserts http.DefaultTransport.
func ctiTransport(fake string) *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "cti.api.crowdsec.net:443" {
			return d.DialContext(ctx, network, fake)
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		td := tls.Dialer{NetDialer: &d, Config: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}}
		return td.DialContext(ctx, network, addr)
	}
	return tr
}

var (
	diffSetup sync.Once
	// diffTransport sends the reference's CTI requests to the fake server.
	diffTransport *http.Transport
)

// useDiffTransport makes http.DefaultTransport diffTransport for the
// test: the reference's CTI client uses it. It is put back when the test
// ends, since its TLS dial ignores the TLS settings crowdsec's apiclient
// puts on its clone of http.DefaultTransport (a later test's client would
// verify a node's certificate against the system roots and fail).
func useDiffTransport(t *testing.T) {
	saved := http.DefaultTransport
	http.DefaultTransport = diffTransport
	t.Cleanup(func() { http.DefaultTransport = saved })
}

// setupDiffHelpers gives both sides the same outside data.
func setupDiffHelpers(t *testing.T) {
	first := false
	defer func() {
		if !first && diffTransport != nil {
			useDiffTransport(t)
		}
	}()
	diffSetup.Do(func() {
		first = true
		dir, err := os.MkdirTemp("", "exprhelpers-diff")
		if err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.WriteFile(filepath.Join(dir, "ips.txt"), []byte("# known\n1.2.3.4\n\n2a01:4f8::1\nbob\nünï\n"), 0o600))
		must(os.WriteFile(filepath.Join(dir, "ua.regex"), []byte("^curl/\n(?i)nikto\n# comment\n"), 0o600))
		writeDiffGeoIP(t, dir)
		srv := fakeCTI()
		log.SetLevel(log.PanicLevel)

		// reference
		must(exprhelpers.Init(nil))
		must(exprhelpers.GeoIPInit(dir))
		must(exprhelpers.FileInit(dir, "ips.txt", "string"))
		must(exprhelpers.FileInit(dir, "ua.regex", "regexp"))
		diffTransport = ctiTransport(strings.TrimPrefix(srv.URL, "http://"))
		useDiffTransport(t)
		key, ttl, size := diffCTIKey, time.Hour, 100
		must(ctiexpr.InitCrowdsecCTI(&key, &ttl, &size, log.PanicLevel))
		must(cache.CacheInit(cache.CacheCfg{Name: "seen", Size: 10, TTL: time.Hour}, nil))
		must(cache.SetKey("seen", "pre", "präset", nil))

		// halapi
		must(profiles.Configure(profiles.HelperConfig{CTIKey: diffCTIKey, CTIURL: srv.URL + "/v2", CTICacheTTL: time.Hour, CTICacheSize: 100,
			DataDir: dir, Stashes: []profiles.StashConfig{{Name: "seen", Size: 10, TTL: time.Hour}}}))
		if _, err := profiles.Eval(`SetInStash("seen", "pre", "präset", nil)`, &models.Alert{}, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	})
}

func parseDiffAlert(t *testing.T, raw string) (*csmodels.Alert, *models.Alert) {
	t.Helper()
	var cs csmodels.Alert
	var ha models.Alert
	if err := json.Unmarshal([]byte(raw), &cs); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(raw), &ha); err != nil {
		t.Fatal(err)
	}
	return &cs, &ha
}

func refEval(src string, a *csmodels.Alert) (out any, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	prog, err := expr.Compile(src, exprhelpers.GetExprOptions(map[string]any{"Alert": &csmodels.Alert{}})...)
	if err != nil {
		return nil, fmt.Errorf("compile: %w", err)
	}
	return expr.Run(prog, map[string]any{"Alert": a})
}

// canon renders a result for comparison: JSON (the two sides' struct types
// have the same field names), nil typed pointers as null.
func canon(v any) string {
	if v == nil {
		return "null"
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
		return "null"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return string(b)
}

type diffResult struct {
	val    string
	err    error
	isComp bool
}

func runBoth(src string, cs *csmodels.Alert, ha *models.Alert) (ref, hal diffResult) {
	rv, rerr := refEval(src, cs)
	ref = diffResult{val: canon(rv), err: rerr, isComp: rerr != nil && strings.HasPrefix(rerr.Error(), "compile:")}
	hv, herr := profiles.Eval(src, ha, nil, time.Now())
	hal = diffResult{val: canon(hv), err: herr}
	if herr != nil {
		// compile errors are one line and name the position; run errors
		// start with the message
		_, cerr := profiles.Parse([]byte("name: x\nfilters: [true]\nduration_expr: " + strconvQuote(src) + "\n"))
		hal.isComp = cerr != nil
	}
	return ref, hal
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestProfilesExprHelpersDifferential(t *testing.T) {
	setupDiffHelpers(t)
	names := make([]string, 0, len(diffAlerts))
	for n := range diffAlerts {
		names = append(names, n)
	}
	sort.Strings(names)
	compared, errorsAgreed := 0, 0
	for _, name := range names {
		cs, ha := parseDiffAlert(t, diffAlerts[name])
		for _, src := range diffExprs {
			ref, hal := runBoth(src, cs, ha)
			compared++
			switch {
			case ref.err != nil || hal.err != nil:
				if (ref.err == nil) != (hal.err == nil) || ref.isComp != hal.isComp {
					t.Errorf("[%s] %s:\n  reference: %s / %v\n  halapi:    %s / %v", name, src, ref.val, ref.err, hal.val, hal.err)
				} else {
					errorsAgreed++
				}
			case ref.val != hal.val:
				t.Errorf("[%s] %s:\n  reference: %s\n  halapi:    %s", name, src, ref.val, hal.val)
			}
		}
	}
	t.Logf("%d expression evaluations compared over %d alerts (%d failed on both sides)", compared, len(names), errorsAgreed)

	// Known, deliberate differences: the reference fails, halapi answers.
	cs, ha := parseDiffAlert(t, diffAlerts["ipv4"])
	d := &csmodels.Decision{Duration: ptrTo("4h"), Origin: ptrTo("crowdsec"), Type: ptrTo("ban"), Scope: ptrTo("Ip"), Value: ptrTo("1.2.3.4"), Scenario: ptrTo("s")}
	cs.Decisions = []*csmodels.Decision{d}
	ha.Decisions = []*models.Decision{{Duration: d.Duration, Origin: d.Origin, Type: d.Type, Scope: d.Scope, Value: d.Value, Scenario: d.Scenario}}
	for src, why := range map[string]string{
		`Alert.FormatAsStrings("m1", nil)`:  knownDifferences[`Alert.FormatAsStrings("m1", nil)#decisions`],
		`SetInStash("seen", "k", "v", nil)`: knownDifferences[`SetInStash("seen", "k", "v", nil)`],
	} {
		ref, hal := runBoth(src, cs, ha)
		if ref.err == nil || hal.err != nil {
			t.Errorf("%s: the known difference (%s) changed: reference %s / %v, halapi %s / %v", src, why, ref.val, ref.err, hal.val, hal.err)
		}
	}
	if got, _ := profiles.Eval(`Alert.FormatAsStrings("m1", nil)`, ha, nil, time.Now()); !reflect.DeepEqual(got, []string{"(m1/crowdsec) crowdsecurity/http-probing by ip 1.2.3.4 (FR/16276) : 4h ban on Ip 1.2.3.4"}) {
		t.Errorf("FormatAsStrings with a decision = %#v", got)
	}
}

// refOutcome is what the reference's alert handler does with the profiles
// for an alert without decisions: the decisions set, the profiles that
// matched (notifications), or the error that fails the request.
type outcome struct {
	Decisions []string
	Matched   []int
	Err       bool
}

func refProfiles(path string) ([]*csprofiles.Runtime, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	var cfgs []*csconfig.ProfileCfg
	for {
		var c csconfig.ProfileCfg
		if err := dec.Decode(&c); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return nil, err
		}
		cfgs = append(cfgs, &c)
	}
	return csprofiles.NewProfile(cfgs)
}

func refOutcome(rts []*csprofiles.Runtime, a *csmodels.Alert) outcome {
	var o outcome
	var set []*csmodels.Decision
	for i, p := range rts {
		ds, matched, err := p.EvaluateProfile(a)
		brk := false
		if err != nil {
			switch p.Cfg.OnError {
			case "apply":
				matched = true
			case "continue", "ignore":
			case "break":
				brk = true
			default:
				return outcome{Err: true}
			}
		}
		if !matched {
			continue
		}
		if len(set) == 0 {
			set = append(set, ds...)
		}
		o.Matched = append(o.Matched, i)
		if p.Cfg.OnSuccess == "break" || brk {
			break
		}
	}
	for _, d := range set {
		o.Decisions = append(o.Decisions, fmt.Sprintf("%s %s %s:%s origin=%s scenario=%s simulated=%v",
			*d.Type, *d.Duration, *d.Scope, *d.Value, *d.Origin, *d.Scenario, d.Simulated != nil && *d.Simulated))
	}
	return o
}

func halOutcome(e *profiles.Engine, a *models.Alert) outcome {
	ms, err := e.Evaluate(a, time.Now())
	if err != nil {
		return outcome{Err: true}
	}
	var o outcome
	for _, m := range ms {
		o.Matched = append(o.Matched, m.Index)
	}
	for _, d := range a.Decisions {
		o.Decisions = append(o.Decisions, fmt.Sprintf("%s %s %s:%s origin=%s scenario=%s simulated=%v",
			*d.Type, *d.Duration, *d.Scope, *d.Value, *d.Origin, *d.Scenario, d.Simulated != nil && *d.Simulated))
	}
	return o
}

// TestProfilesExampleFilesDifferential: every profiles.yaml kept in
// lapi/profiles/testdata (the reference's default and test fixture, the
// documentation's examples) loads in both and gives the same decisions and
// notification matches for every alert.
func TestProfilesExampleFilesDifferential(t *testing.T) {
	setupDiffHelpers(t)
	files, err := filepath.Glob("../lapi/profiles/testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example profiles: %v", err)
	}
	files = append(files, "../lapi/profiles/default_profiles.yaml")
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			rts, rerr := refProfiles(path)
			hps, herr := profiles.Load(path)
			if (rerr == nil) != (herr == nil) {
				t.Fatalf("load: reference %v, halapi %v", rerr, herr)
			}
			if rerr != nil {
				t.Logf("refused by both: reference %v; halapi %v", rerr, herr)
				return
			}
			engine := profiles.NewEngine(hps, nil)
			for name, raw := range diffAlerts {
				cs, ha := parseDiffAlert(t, raw)
				ref, hal := refOutcome(rts, cs), halOutcome(engine, ha)
				if !reflect.DeepEqual(ref, hal) {
					t.Errorf("[%s]\n  reference: %+v\n  halapi:    %+v", name, ref, hal)
				}
				t.Logf("[%s] %+v", name, hal)
			}
		})
	}
}

// TestProfilesJA4HDifferential: JA4H fingerprints agree with the reference's
// for requests a profile could never build but the helper must still get
// right (methods, versions, cookies, referer, languages, header counts).
func TestProfilesJA4HDifferential(t *testing.T) {
	mk := func(method, proto string, major, minor int, headers ...string) *http.Request {
		r := httptest.NewRequest(method, "/x?y=1", nil)
		r.Proto, r.ProtoMajor, r.ProtoMinor = proto, major, minor
		r.Header = http.Header{}
		for i := 0; i+1 < len(headers); i += 2 {
			r.Header.Add(headers[i], headers[i+1])
		}
		return r
	}
	many := []string{}
	for i := range 120 {
		many = append(many, fmt.Sprintf("X-H%03d", i), "v")
	}
	reqs := map[string]*http.Request{
		"bare get":       mk("GET", "HTTP/1.1", 1, 1),
		"post cookies":   mk("POST", "HTTP/1.0", 1, 0, "Cookie", "b=2; a=1; c=ü", "User-Agent", "curl/8", "Accept-Language", "fr-FR,en;q=0.5"),
		"referer":        mk("PUT", "HTTP/2.0", 2, 0, "Referer", "https://example.com/", "Accept-Language", "en", "Accept", "*/*"),
		"lang semicolon": mk("DELETE", "HTTP/1.1", 1, 1, "Accept-Language", "de-DE;q=0.9", "Cookie", "", "Cookie2", "x"),
		"one letter":     mk("X", "HTTP/1.1", 1, 1, "accept-language", "zh-Hant-TW"),
		"many headers":   mk("OPTIONS", "HTTP/1.1", 1, 1, many...),
		"unicode":        mk("GET", "HTTP/1.1", 1, 1, "Accept-Language", "ü-ÜÖ", "Cookie", "ñ=ü; a=b"),
	}
	for name, r := range reqs {
		want := ja4h.JA4H(r.Clone(r.Context()))
		got, err := profiles.JA4H(r.Clone(r.Context()))
		if err != nil || got != want {
			t.Errorf("%s: halapi %q (%v), reference %q", name, got, err, want)
		}
	}
}
