package profiles

import (
	"encoding/json"
	"fmt"
	"github.com/halapi/halapi/internal/testutil"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/halapi/halapi/lapi/models"
)

// configure sets cfg for the test and restores the zero configuration after.
func configure(t *testing.T, cfg HelperConfig) *helperState {
	t.Helper()
	if err := Configure(cfg); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { _ = Configure(HelperConfig{}) })
	return state()
}

func evalOK(t *testing.T, src string, a *models.Alert) any {
	t.Helper()
	got, err := eval(t, src, a, nil)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	return got
}

func checkTable(t *testing.T, a *models.Alert, tests map[string]any) {
	t.Helper()
	for src, want := range tests {
		got, err := eval(t, src, a, nil)
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", src, got, want)
		}
	}
}

// writeGeoIPDBs writes a City and an ASN database into dir.
func writeGeoIPDBs(t *testing.T, dir string) {
	t.Helper()
	write := func(name, dbType string, entries map[string]mmdbtype.Map) {
		testutil.WriteMMDB(t, filepath.Join(dir, name), dbType, entries)
	}
	names := func(en string) mmdbtype.Map { return mmdbtype.Map{"en": mmdbtype.String(en)} }
	write(GeoIPCityFile, "GeoLite2-City", map[string]mmdbtype.Map{
		"1.2.3.0/24": {
			"city":     mmdbtype.Map{"names": names("Paris"), "geoname_id": mmdbtype.Uint32(2988507)},
			"country":  mmdbtype.Map{"iso_code": mmdbtype.String("FR"), "names": names("France"), "is_in_european_union": mmdbtype.Bool(true)},
			"location": mmdbtype.Map{"latitude": mmdbtype.Float64(48.8566), "longitude": mmdbtype.Float64(2.3522), "time_zone": mmdbtype.String("Europe/Paris")},
		},
		"2a01:4f8::/32": {"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE"), "names": names("Deutschland – ü")}},
	})
	write(GeoIPASNFile, "GeoLite2-ASN", map[string]mmdbtype.Map{
		"1.2.0.0/16":    {"autonomous_system_number": mmdbtype.Uint32(16276), "autonomous_system_organization": mmdbtype.String("OVH SAS")},
		"2a01:4f8::/32": {"autonomous_system_number": mmdbtype.Uint32(64496), "autonomous_system_organization": mmdbtype.String("Example")},
	})
}

func TestGeoIPHelpers(t *testing.T) {
	a := richAlert()
	// Without databases: nil, like the reference.
	checkTable(t, a, map[string]any{
		`GeoIPEnrich("1.2.3.4") == nil`:      true,
		`GeoIPASNEnrich("1.2.3.4") == nil`:   true,
		`GeoIPRangeEnrich("1.2.3.4") == nil`: true,
	})

	dir := t.TempDir()
	writeGeoIPDBs(t, dir)
	configure(t, HelperConfig{DataDir: dir})
	checkTable(t, a, map[string]any{
		`GeoIPEnrich(Alert.GetValue()).Country.IsoCode`:                                                  "FR",
		`GeoIPEnrich(Alert.GetValue()).City.Names.en`:                                                    "Paris",
		`GeoIPEnrich(Alert.GetValue()).Country.IsInEuropeanUnion`:                                        true,
		`GeoIPEnrich(Alert.GetValue()).Location.TimeZone`:                                                "Europe/Paris",
		`GeoIPEnrich(Alert.GetValue()).Location.Latitude > 48`:                                           true,
		`GeoIPEnrich("::ffff:1.2.3.9").Country.IsoCode`:                                                  "FR",
		`GeoIPEnrich("2a01:4f8::1").Country.Names["en"]`:                                                 "Deutschland – ü",
		`GeoIPEnrich("9.9.9.9").Country.IsoCode`:                                                         "", // not found: an empty record
		`GeoIPASNEnrich(Alert.GetValue()).AutonomousSystemNumber`:                                        uint(16276),
		`GeoIPASNEnrich("2a01:4f8:1::5").AutonomousSystemOrganization`:                                   "Example",
		`GeoIPRangeEnrich(Alert.GetValue()).String()`:                                                    "1.2.0.0/16",
		`GeoIPRangeEnrich("2a01:4f8::1").String()`:                                                       "2a01:4f8::/32",
		`GeoIPRangeEnrich("9.9.9.9") == nil`:                                                             true,
		`Distance(Sprintf("%v", GeoIPEnrich("1.2.3.4").Location.Latitude), "2.35", "48.85", "2.35") < 1`: true,
	})
	for _, src := range []string{`GeoIPEnrich("nope")`, `GeoIPASNEnrich("")`, `GeoIPRangeEnrich("fe80::1%eth0")`} {
		if _, err := eval(t, src, a, nil); err == nil {
			t.Errorf("%s: expected an error (not an IP)", src)
		}
	}
	// A City database of the wrong type: the City helper fails, as in the reference.
	if err := os.Rename(filepath.Join(dir, GeoIPASNFile), filepath.Join(dir, GeoIPCityFile)); err != nil {
		t.Fatal(err)
	}
	configure(t, HelperConfig{DataDir: dir})
	if _, err := eval(t, `GeoIPEnrich("1.2.3.4")`, a, nil); err == nil || !strings.Contains(err.Error(), "not supported for database type GeoLite2-ASN") {
		t.Errorf("City lookup on an ASN database: %v", err)
	}
	if got := evalOK(t, `GeoIPASNEnrich("1.2.3.4") == nil`, a); got != true {
		t.Error("ASN database missing: want nil")
	}
}

func TestCTIHelper(t *testing.T) {
	var calls atomic.Int32
	var mode atomic.Value
	mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("X-Api-Key") != "good-key" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if mode.Load() == "limit" {
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		switch strings.TrimPrefix(r.URL.Path, "/v2/smoke/") {
		case "1.2.3.4":
			_ = json.NewEncoder(w).Encode(map[string]any{
				"ip": "1.2.3.4", "reputation": "malicious", "background_noise_score": 8,
				"classifications": map[string]any{
					"classifications": []map[string]any{{"name": "community-blocklist"}},
					"false_positives": []map[string]any{},
				},
				"behaviors":      []map[string]any{{"name": "ssh:bruteforce"}},
				"attack_details": []map[string]any{{"name": "crowdsecurity/ssh-bf"}},
				"scores":         map[string]any{"last_day": map[string]any{"total": 3}},
			})
		case "5.6.7.8":
			_ = json.NewEncoder(w).Encode(map[string]any{"ip": "5.6.7.8", "scores": map[string]any{"last_day": map[string]any{"total": 3}},
				"classifications": map[string]any{"false_positives": []map[string]any{{"name": "seo:crawler"}}}})
		case "2001:db8::1":
			_ = json.NewEncoder(w).Encode(map[string]any{"ip": "2001:db8::1", "as_name": "Ünïcode AS"})
		case "6.6.6.6":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	a := richAlert()

	// No key: the reference's "cti is disabled" error.
	if _, err := eval(t, `CrowdsecCTI("1.2.3.4").Reputation`, a, nil); err == nil || !strings.Contains(err.Error(), "cti is disabled") {
		t.Errorf("without key: %v", err)
	}

	st := configure(t, HelperConfig{CTIKey: "good-key", CTIURL: srv.URL + "/v2", CTICacheTTL: time.Minute, CTICacheSize: 2})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st.cti.now = func() time.Time { return now }
	checkTable(t, a, map[string]any{
		`CrowdsecCTI(Alert.GetValue()).Reputation`:                                                                        "malicious",
		`CrowdsecCTI(Alert.GetValue()).GetMaliciousnessScore()`:                                                           float32(1),
		`CrowdsecCTI(Alert.GetValue()).GetBackgroundNoiseScore() > 6 && !CrowdsecCTI(Alert.GetValue()).IsFalsePositive()`: true,
		`CrowdsecCTI(Alert.GetValue()).GetBehaviors()`:                                                                    []string{"ssh:bruteforce"},
		`CrowdsecCTI(Alert.GetValue()).GetAttackDetails()`:                                                                []string{"crowdsecurity/ssh-bf"},
		`CrowdsecCTI(Alert.GetValue()).GetClassifications()`:                                                              []string{"community-blocklist"},
		`CrowdsecCTI("5.6.7.8").GetMaliciousnessScore()`:                                                                  float32(0.3),
		`CrowdsecCTI("5.6.7.8").IsFalsePositive()`:                                                                        true,
		`CrowdsecCTI("5.6.7.8").GetFalsePositives()`:                                                                      []string{"seo:crawler"},
	})
	if n := calls.Load(); n != 2 {
		t.Errorf("%d CTI requests, want 2 (answers cached)", n)
	}
	// 404: an empty item (cached too); the cache holds 2 entries, so the
	// least recently used, 1.2.3.4, is evicted.
	evalOK(t, `CrowdsecCTI("5.6.7.8").Ip`, a)
	checkTable(t, a, map[string]any{`CrowdsecCTI("10.0.0.1").Ip`: "", `CrowdsecCTI("10.0.0.1").GetBehaviors()`: []string{}})
	if st.cti.cache.len() != 2 {
		t.Errorf("cache holds %d entries, bound 2", st.cti.cache.len())
	}
	before := calls.Load()
	evalOK(t, `CrowdsecCTI("1.2.3.4").Ip`, a)
	if calls.Load() != before+1 {
		t.Error("evicted entry not fetched again")
	}
	// TTL: after a minute the entry is fetched again.
	before = calls.Load()
	evalOK(t, `CrowdsecCTI("1.2.3.4").Ip`, a)
	now = now.Add(time.Minute)
	evalOK(t, `CrowdsecCTI("1.2.3.4").Ip`, a)
	if calls.Load() != before+1 {
		t.Errorf("%d requests after the TTL, want 1", calls.Load()-before)
	}
	// IPv6 and unicode.
	if got := evalOK(t, `CrowdsecCTI("2001:db8::1").AsName`, a); *(got.(*string)) != "Ünïcode AS" {
		t.Errorf("as_name = %v", got)
	}
	// A server error is an expression error; CTI stays enabled.
	if _, err := eval(t, `CrowdsecCTI("6.6.6.6").Ip`, a, nil); err == nil || !strings.Contains(err.Error(), "unexpected error") {
		t.Errorf("500: %v", err)
	}
	// 429: calls refused for five minutes without asking the server.
	mode.Store("limit")
	if _, err := eval(t, `CrowdsecCTI("7.7.7.7").Ip`, a, nil); err == nil || !strings.Contains(err.Error(), "quota exceeded") {
		t.Errorf("429: %v", err)
	}
	before = calls.Load()
	if _, err := eval(t, `CrowdsecCTI("7.7.7.8").Ip`, a, nil); err == nil || calls.Load() != before {
		t.Errorf("during backoff: err %v, %d requests", err, calls.Load()-before)
	}
	mode.Store("ok")
	now = now.Add(5 * time.Minute)
	if got := evalOK(t, `CrowdsecCTI("5.6.7.8").Ip`, a); got != "5.6.7.8" {
		t.Errorf("after backoff: %v", got)
	}

	// 403: CTI disabled for good.
	st = configure(t, HelperConfig{CTIKey: "bad-key", CTIURL: srv.URL + "/v2"})
	if _, err := eval(t, `CrowdsecCTI("1.2.3.4").Ip`, a, nil); err == nil || !strings.Contains(err.Error(), "unauthorized") {
		t.Errorf("403: %v", err)
	}
	before = calls.Load()
	if _, err := eval(t, `CrowdsecCTI("1.2.3.4").Ip`, a, nil); err == nil || !strings.Contains(err.Error(), "cti is disabled") || calls.Load() != before {
		t.Errorf("after 403: %v", err)
	}
	_ = st
}

func TestDataFileHelpers(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "ips.txt"), []byte("# bad ips\n1.2.3.4\n\n2001:db8::1\nü-host\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "ua.regex"), []byte("^curl/\n(?i)nikto\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "broken.regex"), []byte("ok\n(unclosed\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "big.txt"), []byte(strings.Repeat("x\n", 100)), 0o600))
	a := richAlert()

	// No data dir: empty, like a reference without the file loaded.
	checkTable(t, a, map[string]any{`File("ips.txt")`: []string{}, `RegexpInFile("curl/8", "ua.regex")`: false})

	configure(t, HelperConfig{DataDir: dir, MaxDataFileBytes: 100})
	checkTable(t, a, map[string]any{
		`File("ips.txt")`:                           []string{"1.2.3.4", "2001:db8::1", "ü-host"},
		`Alert.GetValue() in File("ips.txt")`:       true,
		`"ü-host" in File("ips.txt")`:               true,
		`RegexpInFile("curl/8.1", "ua.regex")`:      true,
		`RegexpInFile("Mozilla NIKTO", "ua.regex")`: true,
		`RegexpInFile("wget", "ua.regex")`:          false,
		`RegexpInFile("ok", "broken.regex")`:        false, // refused whole
		`File("missing.txt")`:                       []string{},
		`File("../etc/passwd")`:                     []string{},
		`File("/etc/passwd")`:                       []string{},
		`File("big.txt")`:                           []string{}, // over the size bound
	})
}

func TestStashHelpers(t *testing.T) {
	a := richAlert()
	// No stash declared: writes ignored, reads "".
	checkTable(t, a, map[string]any{`SetInStash("s", "k", "v", nil) == nil && GetFromStash("s", "k") == ""`: true})

	st := configure(t, HelperConfig{Stashes: []StashConfig{{Name: "s", Size: 2, TTL: time.Minute}}})
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st.stash["s"].now = func() time.Time { return now }
	// in order: each step sees the writes of the ones before
	steps := []struct {
		src  string
		want any
	}{
		{`SetInStash("s", Alert.GetValue(), "seen", nil) == nil`, true},
		{`GetFromStash("s", Alert.GetValue())`, "seen"},
		{`GetFromStash("s", "other")`, ""},
		{`GetFromStash("nope", Alert.GetValue())`, ""},
		{`SetInStash("s", "ü", "ñ", nil) == nil`, true},
		{`GetFromStash("s", "ü")`, "ñ"},
		{"advance", nil},
		{`GetFromStash("s", "ü")`, ""}, // expired
		// size bound: the least recently used is evicted
		{`SetInStash("s", "a", "1", nil) == nil && SetInStash("s", "b", "2", nil) == nil && SetInStash("s", "c", "3", nil) == nil`, true},
		{`GetFromStash("s", "a")`, ""},
		{`GetFromStash("s", "c")`, "3"},
		{`SetInStash("s", "big", Sprintf("%0100000d", 1), nil) == nil`, true},
		{`GetFromStash("s", "big")`, ""}, // over the value bound: not stored
	}
	for _, step := range steps {
		if step.src == "advance" {
			now = now.Add(time.Minute)
			continue
		}
		if got := evalOK(t, step.src, a); !reflect.DeepEqual(got, step.want) {
			t.Errorf("%s = %#v, want %#v", step.src, got, step.want)
		}
	}
	if err := Configure(HelperConfig{Stashes: []StashConfig{{Name: "s", Size: MaxStashSize + 1}}}); err == nil {
		t.Error("stash over the size bound accepted")
	}
}

func TestParsingHelpers(t *testing.T) {
	a := richAlert()
	checkTable(t, a, map[string]any{
		`XMLGetAttributeValue("<a><b id='x' v='ü'/></a>", "/a/b[@id='x']", "v")`: "ü",
		`XMLGetNodeValue("<a><b>one</b><b>two</b></a>", "/a/b")`:                 "one",
		`XMLGetNodeValue("<a>", "/a")`:                                           "",
		`XMLGetNodeValue("<a>x</a>", "[[[")`:                                     "",
		`XMLGetAttributeValue("<a/>", "/a", "nope")`:                             "",
		`LibInjectionIsSQLI("1' OR '1'='1")`:                                     true,
		`LibInjectionIsSQLI("hello world")`:                                      false,
		`LibInjectionIsXSS("<script>alert(1)</script>")`:                         true,
		`LibInjectionIsXSS("")`:                                                  false,
		`let m = {}; ParseKV("a=1 b=\"x y\" c= d==e", m, "kv") == nil && m.kv.a == "1" && m.kv.b == "x y" && m.kv.c == "" && m.kv.d == "" && len(m.kv) == 4`:                        true,
		`let m = {}; ParseKVLax("msg=hello world user=\"bob \\\"b\\\"\" x=", m, "p") == nil && m.p.msg == "hello world" && m.p.user == "bob \"b\"" && m.p.x == "" && len(m.p) == 3`: true,
		`let m = {}; UnmarshalJSON("{\"a\": [1, \"ü\"]}", m, "j") == nil && m.j.a[1] == "ü"`:                                                                                        true,
	})
	// Errors, as in the reference (the expression fails).
	for _, src := range []string{`JA4H(nil)`, `ParseKV("no pairs here", {}, "kv")`, `let m = {"kv": 1}; ParseKV("a=1", m, "kv")`,
		`ParseKVLax("", {}, "p")`, `ParseKVLax("a=1", {"p": "x"}, "p")`, `UnmarshalJSON("{", {}, "j")`} {
		if _, err := eval(t, src, a, nil); err == nil {
			t.Errorf("%s: expected an error", src)
		}
	}
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Accept-Language", "fr-FR,en;q=0.5")
	req.Header.Set("Cookie", "b=2; a=1")
	req.Header.Set("User-Agent", "x")
	got, err := JA4H(req)
	if err != nil || !strings.HasPrefix(got, "ge11cn02frfr_") || len(got) != 51 {
		t.Errorf("JA4H = %q, %v", got, err)
	}
	if got := evalOK(t, `LookupHost("localhost")`, a).([]string); len(got) == 0 {
		t.Error("LookupHost(localhost) found nothing")
	}
	if got := evalOK(t, `LookupHost("nonexistent.invalid")`, a).([]string); len(got) != 0 {
		t.Errorf("LookupHost(invalid) = %v", got)
	}
}

func TestFormatAsStrings(t *testing.T) {
	a := richAlert()
	a.Decisions = nil
	checkTable(t, a, map[string]any{
		`Alert.FormatAsStrings("m1", nil)`: []string{"(m1) alert : crowdsecurity/http-bf by ip 1.2.3.4 (FR/16276)"},
		`Alert.Source.String()`:            "ip 1.2.3.4 (FR/16276)",
	})
	a.Decisions = []*models.Decision{
		{Duration: models.Str("4h"), Origin: models.Str("crowdsec"), Type: models.Str("ban"), Scope: models.Str("Ip"), Value: models.Str("1.2.3.4")},
		{Duration: models.Str("1h"), Origin: models.Str("crowdsec"), Type: models.Str("captcha"), Scope: models.Str("Ip"), Value: models.Str("1.2.3.4"), Simulated: models.Bool(true)},
	}
	checkTable(t, a, map[string]any{`Alert.FormatAsStrings("", nil)`: []string{
		"(crowdsec) crowdsecurity/http-bf for 1/2 decisions : 4h ban on Ip 1.2.3.4",
		"(crowdsec) crowdsecurity/http-bf for 2/2 decisions : (simulated decision)1h captcha on Ip 1.2.3.4",
	}})
}

func TestConfigureBounds(t *testing.T) {
	for name, cfg := range map[string]HelperConfig{
		"cache size":   {CTICacheSize: MaxCTICacheSize + 1},
		"negative ttl": {CTICacheTTL: -time.Second},
		"stash size":   {Stashes: []StashConfig{{Name: "s", Size: 0}}},
		"stash name":   {Stashes: []StashConfig{{Size: 1}}},
		"too many":     {Stashes: make([]StashConfig, MaxStashes+1)},
		"file bound":   {MaxDataFileBytes: -1},
		"lookup bound": {LookupTimeout: -1},
		"cti timeout":  {CTITimeout: -1},
	} {
		if err := Configure(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A refused configuration leaves the one in force.
	st := configure(t, HelperConfig{Stashes: []StashConfig{{Name: "kept", Size: 1, TTL: time.Hour}}})
	if err := Configure(HelperConfig{CTICacheSize: -1}); err == nil || state() != st {
		t.Errorf("refused configuration replaced the state: %v", err)
	}
	if st.cfg.CTICacheTTL != DefaultCTICacheTTL || st.cfg.CTICacheSize != DefaultCTICacheSize || st.cfg.CTIURL != DefaultCTIURL {
		t.Errorf("defaults: %+v", st.cfg)
	}
}

// The helpers' shared state (CTI cache, stash, data files, GeoIP readers)
// is safe under concurrent evaluations (run with -race).
func TestHelpersConcurrent(t *testing.T) {
	dir := t.TempDir()
	writeGeoIPDBs(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "ips.txt"), []byte("1.2.3.4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"ip":"x","background_noise_score":3}`))
	}))
	defer srv.Close()
	configure(t, HelperConfig{DataDir: dir, CTIKey: "k", CTIURL: srv.URL, CTICacheSize: 4,
		Stashes: []StashConfig{{Name: "s", Size: 8, TTL: time.Hour}}})
	ps := mustParse(t, `name: all
filters:
  - CrowdsecCTI(Alert.GetValue()).GetBackgroundNoiseScore() == 3 && Alert.GetValue() in File("ips.txt") && GeoIPEnrich(Alert.GetValue()).Country.IsoCode == "FR" && SetInStash("s", Alert.GetValue(), "1", nil) == nil && GetFromStash("s", Alert.GetValue()) == "1" && !RegexpInFile("x", "ips.txt")
decisions:
  - type: ban
    duration: 1h
`)
	e := NewEngine(ps, nil)
	done := make(chan error, 8)
	for g := range 8 {
		go func() {
			for i := range 50 {
				a := agentAlert("Ip", "1.2.3.4", "s", true)
				if g%2 == 0 {
					a.Source.Value = models.Str(fmt.Sprintf("1.2.3.%d", 4+i%3)) // CTI cache churn
				}
				if err := e.Apply(a, t0); err != nil {
					done <- err
					return
				}
				if *a.Source.Value == "1.2.3.4" && len(a.Decisions) != 1 {
					done <- fmt.Errorf("1.2.3.4 not banned: %d decisions", len(a.Decisions))
					return
				}
			}
			done <- nil
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Concurrent misses for one IP share one CTI request.
func TestCTIConcurrentMissesShareOneRequest(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		<-release
		_, _ = w.Write([]byte(`{"ip":"1.2.3.4","reputation":"malicious"}`))
	}))
	defer srv.Close()
	st := configure(t, HelperConfig{CTIKey: "k", CTIURL: srv.URL})
	const n = 8
	out := make(chan string, n)
	for range n {
		go func() {
			it, err := st.cti.lookup("1.2.3.4")
			if err != nil {
				out <- err.Error()
				return
			}
			out <- it.Reputation
		}()
	}
	// wait until the first request reached the server, then let it answer
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range n {
		if got := <-out; got != "malicious" {
			t.Errorf("lookup = %q", got)
		}
	}
	if c := calls.Load(); c != 1 {
		t.Errorf("%d CTI requests for %d concurrent lookups, want 1", c, n)
	}
}
