package profiles

import (
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/expr-lang/expr"

	"github.com/halapi/halapi/lapi/models"
)

// eval compiles src against the profile environment and runs it.
func eval(t *testing.T, src string, a *models.Alert, store Store) (any, error) {
	t.Helper()
	prog, err := compile(src, false)
	if err != nil {
		t.Fatalf("compile %s: %v", src, err)
	}
	var s Store
	if store != nil && !reflect.ValueOf(store).IsNil() {
		s = store
	}
	return expr.Run(prog, env{Alert: a, store: s, now: t0, logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func richAlert() *models.Alert {
	a := agentAlert("Ip", "1.2.3.4", "crowdsecurity/http-bf", true)
	a.Source.AsNumber = "16276"
	a.Source.AsName = "OVH SAS"
	a.Source.Cn = "FR"
	a.Meta = models.Meta{{Key: "service", Value: "http"}, {Key: "service", Value: "second"}}
	a.Events = []*models.Event{
		{Timestamp: models.Str("2025-06-01T11:00:00Z"), Meta: models.Meta{{Key: "target_fqdn", Value: "a.example.com"}}},
		{Timestamp: models.Str("2025-06-01T11:01:00Z"), Meta: models.Meta{{Key: "target_fqdn", Value: "b.example.com"}, {Key: "status", Value: "404"}}},
	}
	return a
}

func TestAlertEnvironment(t *testing.T) {
	a := richAlert()
	tests := map[string]any{
		`Alert.Scenario == "crowdsecurity/http-bf"`: true,
		`Alert.Scenario`:                  a.Scenario, // pointers are kept as such outside comparisons
		`Alert.GetScenario()`:             "crowdsecurity/http-bf",
		`Alert.GetScope()`:                "Ip",
		`Alert.GetValue()`:                "1.2.3.4",
		`Alert.Source.GetValue()`:         "1.2.3.4",
		`Alert.Source.GetScope()`:         "Ip",
		`Alert.Source.Value == "1.2.3.4"`: true,
		`Alert.Source.GetAsNumberName()`:  "16276 OVH SAS",
		`Alert.Source.Cn == "FR"`:         true,
		`Alert.GetEventsCount()`:          int32(6),
		`Alert.EventsCount > 5`:           true,
		`Alert.Remediation`:               true,
		`Alert.Simulated == false`:        true,
		`Alert.MachineID`:                 "machine1",
		`Alert.UUID`:                      "alert-uuid",
		`Alert.GetMeta("service")`:        "http",
		`Alert.GetMeta("nope")`:           "",
		`any(Alert.Events, {.GetMeta("target_fqdn") == "b.example.com"})`:        true,
		`all(Alert.Events, {.GetMeta("status") == "404"})`:                       false,
		`count(Alert.Events, {.GetMeta("target_fqdn") endsWith ".example.com"})`: 2,
		`Alert.Events[0].Timestamp == "2025-06-01T11:00:00Z"`:                    true,
		`len(Alert.Decisions)`: 0,
		`Alert.GetScenario() in ["crowdsecurity/ssh-bf", "crowdsecurity/http-bf"]`: true,
		`Alert.GetValue() matches "^1\\.2\\."`:                                     true,
		`Alert.Remediation == true && Alert.GetScope() == "Ip" ? "yes" : "no"`:     "yes",
	}
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

func TestDecisionHelpers(t *testing.T) {
	store := &fakeStore{}
	a := agentAlert("Ip", "1.2.3.4", "s", true)
	run := func(src string) any {
		t.Helper()
		got, err := eval(t, src, a, store)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		return got
	}
	const idiom = `Sprintf('%dh', (GetDecisionsCount(Alert.GetValue()) + 1) * 4)`
	if got := run(idiom); got != "4h" {
		t.Fatalf("empty store: %v", got)
	}
	store.add("1.2.3.4", t0.Add(-time.Hour), 4*time.Hour) // active, 3h left
	if got := run(idiom); got != "8h" {
		t.Fatalf("one decision: %v", got)
	}
	store.add("1.2.3.0/24", t0.Add(-10*time.Hour), 20*time.Hour) // active, 10h left
	store.add("1.2.3.4", t0.Add(-72*time.Hour), time.Hour)       // expired
	store.add("9.9.9.9", t0.Add(-time.Hour), 4*time.Hour)        // unrelated

	checks := map[string]any{
		`GetDecisionsCount(Alert.GetValue())`:                                                                  3,
		`GetDecisionsCount("1.2.3.0/24")`:                                                                      1, // only the /24 contains the whole range
		`GetDecisionsCount("root")`:                                                                            0,
		`GetDecisionsSinceCount(Alert.GetValue(), "7h")`:                                                       1,
		`GetDecisionsSinceCount(Alert.GetValue(), "11h")`:                                                      2,
		`GetDecisionsSinceCount(Alert.GetValue(), "4d")`:                                                       3,
		`GetDecisionsSinceCount(Alert.GetValue(), "zz")`:                                                       0,
		`GetActiveDecisionsCount(Alert.GetValue())`:                                                            2,
		`GetActiveDecisionsCount("5.5.5.5")`:                                                                   0,
		`GetActiveDecisionsTimeLeft(Alert.GetValue())`:                                                         10 * time.Hour,
		`GetActiveDecisionsTimeLeft("5.5.5.5")`:                                                                time.Duration(0),
		`GetActiveDecisionsTimeLeft(Alert.GetValue()) > duration("9h")`:                                        true,
		`GetDecisionsSinceCount(Alert.GetValue(), "7h") > 0 && GetActiveDecisionsCount(Alert.GetValue()) >= 2`: true,
	}
	for src, want := range checks {
		if got := run(src); !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", src, got, want)
		}
	}

	// Without a store every decision helper answers 0.
	for _, src := range []string{`GetDecisionsCount("1.2.3.4")`, `GetDecisionsSinceCount("1.2.3.4", "1h")`, `GetActiveDecisionsCount("1.2.3.4")`} {
		if got, err := eval(t, src, a, nil); err != nil || got != 0 {
			t.Errorf("nil store %s = %v, %v", src, got, err)
		}
	}
	if got, _ := eval(t, `GetActiveDecisionsTimeLeft("1.2.3.4")`, a, nil); got != time.Duration(0) {
		t.Errorf("nil store time left = %v", got)
	}
}

func TestStatelessHelpers(t *testing.T) {
	host, _ := os.Hostname()
	a := richAlert()
	tests := []struct {
		src  string
		want any
	}{
		{`Sprintf("%s-%d-%v", "a", 2, true)`, "a-2-true"},
		{`TimeNow()`, "2025-06-01T12:00:00Z"},
		{`IpInRange("1.2.3.4", "1.2.3.0/24")`, true},
		{`IpInRange("1.2.4.4", "1.2.3.0/24")`, false},
		{`IpInRange("nope", "1.2.3.0/24")`, false},
		{`IpInRange("1.2.3.4", "nope")`, false},
		{`IpToRange("1.2.3.4", "/24")`, "1.2.3.0/24"},
		{`IpToRange("1.2.3.4", "16")`, "1.2.0.0/16"},
		{`IpToRange("2001:db8::1", "64")`, "2001:db8::/64"},
		{`IpToRange("1.2.3.4", "x")`, ""},
		{`IpToRange("1.2.3.4", "40")`, ""},
		{`IsIPV4("1.2.3.4")`, true},
		{`IsIPV4("::1")`, false},
		{`IsIPV6("::1")`, true},
		{`IsIPV6("1.2.3.4")`, false},
		{`IsIPV6("x")`, false},
		{`IsIP("::ffff:1.2.3.4")`, true},
		{`IsIP("1.2.3")`, false},
		{`Upper("aBc")`, "ABC"},
		{`Lower("aBc")`, "abc"},
		{`ParseUnix("1700000000.123")`, time.Unix(1700000000, 0).Format(time.RFC3339)},
		{`ParseUnix("-5")`, ""},
		{`ParseUnix("abc")`, ""},
		{`Atof("1.5")`, 1.5},
		{`Atof("x")`, 0.0},
		{`Match("*.example.com", "www.example.com")`, true},
		{`Match("*.example.com", "example.com")`, false},
		{`Match("a?c", "abc")`, true},
		{`Match("a?c", "ac")`, false},
		{`Match("a*", "a")`, true},
		{`Match("*", "")`, true},
		{`Match("", "")`, true},
		{`Match("", "x")`, false},
		{`KeyExists("a", {"a": 1})`, true},
		{`KeyExists("b", {"a": 1})`, false},
		{`Fields(" a  b ")`, []string{"a", "b"}},
		{`Index("chicken", "ken")`, 4},
		{`IndexAny("golang", "ny")`, 4},
		{`Join(Split("a,b,c", ","), "-")`, "a-b-c"},
		{`SplitAfter("a,b", ",")`, []string{"a,", "b"}},
		{`SplitN("a,b,c", ",", 2)`, []string{"a", "b,c"}},
		{`SplitAfterN("a,b,c", ",", 2)`, []string{"a,", "b,c"}},
		{`Replace("aaa", "a", "b", 2)`, "bba"},
		{`ReplaceAll("aaa", "a", "b")`, "bbb"},
		{`Trim("xxhixx", "x")`, "hi"},
		{`TrimLeft("xxhixx", "x")`, "hixx"},
		{`TrimRight("xxhixx", "x")`, "xxhi"},
		{`TrimSpace("  hi ")`, "hi"},
		{`TrimPrefix("prefix-x", "prefix-")`, "x"},
		{`TrimSuffix("x.log", ".log")`, "x"},
		{`Get(Split("a,b", ","), 1)`, "b"},
		{`Get(Split("a,b", ","), 5)`, ""},
		{`Get(Split("a,b", ","), -1)`, ""},
		{`ToString("x")`, "x"},
		{`ToString(1)`, ""},
		{`B64Decode("aGVsbG8=")`, "hello"},
		{`PathUnescape("a%20b")`, "a b"},
		{`PathUnescape("a%zzb")`, "a%zzb"},
		{`QueryUnescape("a+b%21")`, "a b!"},
		{`PathEscape("a b/c")`, "a%20b%2Fc"},
		{`QueryEscape("a b&c")`, "a+b%26c"},
		{`ParseUri("/p?a=1&a=2&b=x")["a"]`, []string{"1", "2"}},
		{`ParseQuery("a=1;b&c=%zz&a=2")["a"]`, []string{"1;b", "2"}},
		{`ParseQuery("a=1;b&c=%zz&a=2")["c"]`, []string{"%zz"}},
		{`ExtractQueryParam("/x?id=1&id=%27", "id")`, []string{"1", "'"}},
		{`ExtractQueryParam("/x", "id")`, []string{}},
		{`ExtractQueryParam("/x?a=1", "id")`, []string{}},
		{`JsonExtract('{"a":{"b":[1,{"c":"x\\u0041"}]}}', "a.b[1].c")`, `x\u0041`},
		{`JsonExtract('{"a":{"b":[1,{"c":"x"}]}}', "a.b[0]")`, "1"},
		{`JsonExtract('{"a":{"b":[1]}}', "a.b")`, "[1]"},
		{`JsonExtract('{"a":1}', "z")`, ""},
		{`JsonExtract('not json', "a")`, ""},
		{`JsonExtract('[{"a":"v"}]', "[0].a")`, "v"},
		{`JsonExtractUnescape('{"c":"x\\u0041"}', "c")`, "xA"},
		{`JsonExtractUnescape('{"a":{"c":"x"}}', "a", "c")`, ""}, // only the first key counts, as in the reference
		{`JsonExtractUnescape('{"a":{"c":5}}', "a", "c")`, ""},
		{`JsonExtractSlice('{"a":[1,"x"]}', "a")`, []any{1.0, "x"}},
		{`JsonExtractSlice('{"a":{}}', "a")`, []any(nil)},
		{`JsonExtractObject('{"a":{"k":"v"}}', "a")`, map[string]any{"k": "v"}},
		{`JsonExtractObject('{"a":[1]}', "a")`, map[string]any(nil)},
		{`ToJsonString({"a": 1})`, `{"a":1}`},
		{`Distinct([1, 1, 2, "a", "a"])`, []any{1, 2, "a"}},
		{`Distinct(Split("a,a,b", ","))`, []any{"a", "b"}},
		{`Distinct("x")`, nil},
		{`Flatten([1, [2, [3]]], 4)`, []any{1, 2, 3, 4}},
		{`FlattenDistinct([1, [1, [2]]], 2)`, []any{1, 2}},
		{`FloatApproxEqual(0.1 + 0.2, 0.3)`, true},
		{`FloatApproxEqual(0.1, 0.2)`, false},
		{`Hostname()`, host},
		{`Distance("0", "0", "51.5074", "-0.1278")`, 0.0},
		{`int(Distance("48.8566", "2.3522", "51.5074", "-0.1278"))`, 343},
		{`AverageInterval(map(["2025-01-01T00:00:00Z", "2025-01-01T03:00:00Z", "2025-01-01T04:00:00Z"], date(#)))`, 2 * time.Hour},
		{`MedianInterval(map(["2025-01-01T00:00:00Z", "2025-01-01T03:00:00Z", "2025-01-01T04:00:00Z", "2025-01-01T04:30:00Z"], date(#)))`, time.Hour},
		{`LogInfo("x %d", 1)`, true},
		{`any(Alert.Events, {IpInRange(Alert.GetValue(), "1.2.0.0/16") && Lower(.GetMeta("target_fqdn")) startsWith "a."})`, true},
	}
	for _, tc := range tests {
		got, err := eval(t, tc.src, a, nil)
		if err != nil {
			t.Errorf("%s: %v", tc.src, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.src, got, tc.want)
		}
	}

	// Helpers that fail at run time.
	// JsonExtractLib always fails in a profile, as in the reference (it
	// wants its path as one []string, which expr never passes).
	for _, src := range []string{`JsonExtractLib('{"a":"x"}', "a")`, `JsonExtractLib('{"a":{"b":"x"}}', "a", "b")`, `B64Decode("!!")`, `Distance("x", "0", "1", "1")`, `AverageInterval(map(["2025-01-01T00:00:00Z"], date(#)))`} {
		if _, err := eval(t, src, a, nil); err == nil {
			t.Errorf("%s: expected a runtime error", src)
		}
	}
}

// referenceHelpers are the names CrowdSec v1.7.6 registers for expressions
// (pkg/exprhelpers/expr_lib.go) plus the profile-only ones: every one must
// compile in a profile.
var referenceHelpers = map[string]string{
	"CrowdsecCTI": `CrowdsecCTI("1.2.3.4").GetMaliciousnessScore() > 0.5`, "Flatten": `len(Flatten([1, [2]])) == 2`,
	"Distinct": `len(Distinct([1, 1])) == 1`, "FlattenDistinct": `len(FlattenDistinct([1, [1]])) == 1`,
	"Distance": `Distance("1", "2", "3", "4") > 0`, "GetFromStash": `GetFromStash("s", "k") == ""`,
	"Atof": `Atof("1") == 1`, "JsonExtract": `JsonExtract("{}", "a") == ""`,
	"JsonExtractUnescape": `JsonExtractUnescape("{}", "a") == ""`, "JsonExtractLib": `JsonExtractLib("{}", "a") == ""`,
	"JsonExtractSlice": `JsonExtractSlice("{}", "a") == nil`, "JsonExtractObject": `JsonExtractObject("{}", "a") == nil`,
	"ToJsonString": `ToJsonString(1) == "1"`, "File": `"x" in File("f.txt")`, "RegexpInFile": `RegexpInFile("x", "f.txt")`,
	"Upper": `Upper("a") == "A"`, "Lower": `Lower("A") == "a"`, "IpInRange": `IpInRange("1.2.3.4", "1.2.3.0/24")`,
	"TimeNow": `TimeNow() != ""`, "ParseUri": `len(ParseUri("/?a=b")) == 1`, "ParseQuery": `len(ParseQuery("a=b")) == 1`,
	"ExtractQueryParam": `len(ExtractQueryParam("/?a=b", "a")) == 1`, "PathUnescape": `PathUnescape("a") == "a"`,
	"QueryUnescape": `QueryUnescape("a") == "a"`, "PathEscape": `PathEscape("a") == "a"`, "QueryEscape": `QueryEscape("a") == "a"`,
	"XMLGetAttributeValue": `XMLGetAttributeValue("<a b='c'/>", "/a", "b") == "c"`, "XMLGetNodeValue": `XMLGetNodeValue("<a>x</a>", "/a") == "x"`,
	"IpToRange": `IpToRange("1.2.3.4", "24") != ""`, "IsIPV6": `!IsIPV6("1.2.3.4")`, "IsIPV4": `IsIPV4("1.2.3.4")`,
	"IsIP": `IsIP("::1")`, "LookupHost": `len(LookupHost("localhost")) >= 0`, "GetDecisionsCount": `GetDecisionsCount("1.2.3.4") == 0`,
	"GetActiveDecisionsCount": `GetActiveDecisionsCount("1.2.3.4") == 0`, "GetActiveDecisionsTimeLeft": `GetActiveDecisionsTimeLeft("1.2.3.4") == duration("0s")`,
	"GetDecisionsSinceCount": `GetDecisionsSinceCount("1.2.3.4", "1h") == 0`, "Sprintf": `Sprintf("%d", 1) == "1"`,
	"ParseUnix": `ParseUnix("1") != ""`, "SetInStash": `SetInStash("s", "k", "v", nil) == nil`, "Fields": `len(Fields("a b")) == 2`,
	"Index": `Index("ab", "b") == 1`, "IndexAny": `IndexAny("ab", "b") == 1`, "Join": `Join(Split("a", ","), ",") == "a"`,
	"Split": `len(Split("a,b", ",")) == 2`, "SplitAfter": `len(SplitAfter("a,b", ",")) == 2`, "SplitAfterN": `len(SplitAfterN("a,b", ",", 1)) == 1`,
	"SplitN": `len(SplitN("a,b", ",", 1)) == 1`, "Replace": `Replace("a", "a", "b", 1) == "b"`, "ReplaceAll": `ReplaceAll("a", "a", "b") == "b"`,
	"Trim": `Trim(" a ", " ") == "a"`, "TrimLeft": `TrimLeft(" a", " ") == "a"`, "TrimRight": `TrimRight("a ", " ") == "a"`,
	"TrimSpace": `TrimSpace(" a ") == "a"`, "TrimPrefix": `TrimPrefix("ab", "a") == "b"`, "TrimSuffix": `TrimSuffix("ab", "b") == "a"`,
	"Get": `Get(Split("a", ","), 0) == "a"`, "ToString": `ToString("a") == "a"`, "Match": `Match("a*", "ab")`, "KeyExists": `KeyExists("a", {"a": 1})`,
	"LogInfo": `LogInfo("x")`, "B64Decode": `B64Decode("YQ==") == "a"`, "UnmarshalJSON": `UnmarshalJSON("{}", {}, "k") == nil`,
	"ParseKV": `ParseKV("a=b", {}, "k") == nil`, "ParseKVLax": `ParseKVLax("a=b", {}, "k") == nil`, "Hostname": `Hostname() != ""`,
	"FloatApproxEqual": `FloatApproxEqual(1.0, 1.0)`, "LibInjectionIsSQLI": `LibInjectionIsSQLI("1' OR '1'='1")`,
	"LibInjectionIsXSS": `LibInjectionIsXSS("<script>alert(1)</script>")`, "GeoIPEnrich": `GeoIPEnrich("1.2.3.4") == nil`,
	"GeoIPASNEnrich": `GeoIPASNEnrich("1.2.3.4") == nil`, "GeoIPRangeEnrich": `GeoIPRangeEnrich("1.2.3.4") == nil`,
	"JA4H": `JA4H(nil) != ""`, "AverageInterval": `AverageInterval([now(), now()]) == duration("0s")`,
	"MedianInterval": `MedianInterval([now(), now()]) == duration("0s")`,
}

func TestEveryReferenceHelperCompiles(t *testing.T) {
	if len(referenceHelpers) != 75 {
		t.Fatalf("%d helpers listed, the reference has 75", len(referenceHelpers))
	}
	for name, src := range referenceHelpers {
		if !strings.Contains(src, name+"(") {
			t.Errorf("%s: example %q does not call it", name, src)
		}
		if _, err := compile(src, true); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A profile using them loads.
	if _, err := Parse([]byte("name: cti\non_error: continue\nfilters:\n  - CrowdsecCTI(Alert.GetValue()).GetBackgroundNoiseScore() > 6 && !CrowdsecCTI(Alert.GetValue()).IsFalsePositive()\nduration_expr: \"GeoIPEnrich(Alert.GetValue()) == nil ? '4h' : '1h'\"\n")); err != nil {
		t.Fatal(err)
	}
}
