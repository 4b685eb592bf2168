package profiles

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// exprOptions are the compile options shared by every program: the typed
// environment and the stateless helpers. (Stateful helpers are methods of env.)
var exprOptions = []expr.Option{
	expr.Env(env{}),

	expr.Function("Sprintf", func(p ...any) (any, error) {
		return fmt.Sprintf(p[0].(string), p[1:]...), nil
	}, new(func(string, ...any) string)),

	// IP helpers.
	expr.Function("IpInRange", func(p ...any) (any, error) {
		return ipInRange(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) bool)),
	expr.Function("IpToRange", func(p ...any) (any, error) {
		return ipToRange(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) string)),
	expr.Function("IsIPV4", func(p ...any) (any, error) {
		ip := net.ParseIP(p[0].(string))
		return ip != nil && ip.To4() != nil, nil
	}, new(func(string) bool)),
	expr.Function("IsIPV6", func(p ...any) (any, error) {
		ip := net.ParseIP(p[0].(string))
		return ip != nil && ip.To4() == nil, nil
	}, new(func(string) bool)),
	expr.Function("IsIP", func(p ...any) (any, error) {
		return net.ParseIP(p[0].(string)) != nil, nil
	}, new(func(string) bool)),

	// Strings.
	expr.Function("Upper", str1(strings.ToUpper), new(func(string) string)),
	expr.Function("Lower", str1(strings.ToLower), new(func(string) string)),
	expr.Function("TrimSpace", str1(strings.TrimSpace), new(func(string) string)),
	expr.Function("Trim", str2(strings.Trim), new(func(string, string) string)),
	expr.Function("TrimLeft", str2(strings.TrimLeft), new(func(string, string) string)),
	expr.Function("TrimRight", str2(strings.TrimRight), new(func(string, string) string)),
	expr.Function("TrimPrefix", str2(strings.TrimPrefix), new(func(string, string) string)),
	expr.Function("TrimSuffix", str2(strings.TrimSuffix), new(func(string, string) string)),
	expr.Function("Fields", func(p ...any) (any, error) {
		return strings.Fields(p[0].(string)), nil
	}, new(func(string) []string)),
	expr.Function("Index", func(p ...any) (any, error) {
		return strings.Index(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) int)),
	expr.Function("IndexAny", func(p ...any) (any, error) {
		return strings.IndexAny(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) int)),
	expr.Function("Join", func(p ...any) (any, error) {
		return strings.Join(p[0].([]string), p[1].(string)), nil
	}, new(func([]string, string) string)),
	expr.Function("Split", func(p ...any) (any, error) {
		return strings.Split(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) []string)),
	expr.Function("SplitAfter", func(p ...any) (any, error) {
		return strings.SplitAfter(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) []string)),
	expr.Function("SplitN", func(p ...any) (any, error) {
		return strings.SplitN(p[0].(string), p[1].(string), p[2].(int)), nil
	}, new(func(string, string, int) []string)),
	expr.Function("SplitAfterN", func(p ...any) (any, error) {
		return strings.SplitAfterN(p[0].(string), p[1].(string), p[2].(int)), nil
	}, new(func(string, string, int) []string)),
	expr.Function("Replace", func(p ...any) (any, error) {
		return strings.Replace(p[0].(string), p[1].(string), p[2].(string), p[3].(int)), nil
	}, new(func(string, string, string, int) string)),
	expr.Function("ReplaceAll", func(p ...any) (any, error) {
		return strings.ReplaceAll(p[0].(string), p[1].(string), p[2].(string)), nil
	}, new(func(string, string, string) string)),
	expr.Function("Get", func(p ...any) (any, error) {
		arr, i := p[0].([]string), p[1].(int)
		if i < 0 || i >= len(arr) {
			return "", nil
		}
		return arr[i], nil
	}, new(func([]string, int) string)),
	expr.Function("ToString", func(p ...any) (any, error) {
		s, _ := p[0].(string) // non-strings give "" like the reference
		return s, nil
	}, new(func(any) string)),
	expr.Function("Match", func(p ...any) (any, error) {
		return globMatch(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) bool)),
	expr.Function("B64Decode", func(p ...any) (any, error) {
		b, err := base64.StdEncoding.DecodeString(p[0].(string))
		if err != nil {
			return "", err
		}
		return string(b), nil
	}, new(func(string) string)),
	expr.Function("Atof", func(p ...any) (any, error) {
		f, _ := strconv.ParseFloat(p[0].(string), 64) // 0 on error, like the reference
		return f, nil
	}, new(func(string) float64)),
	expr.Function("FloatApproxEqual", func(p ...any) (any, error) {
		return math.Abs(p[0].(float64)-p[1].(float64)) < 1e-6, nil
	}, new(func(float64, float64) bool)),
	expr.Function("KeyExists", func(p ...any) (any, error) {
		_, ok := p[1].(map[string]any)[p[0].(string)]
		return ok, nil
	}, new(func(string, map[string]any) bool)),

	// Time and host.
	expr.Function("ParseUnix", func(p ...any) (any, error) {
		return parseUnix(p[0].(string)), nil
	}, new(func(string) string)),
	expr.Function("Hostname", func(_ ...any) (any, error) {
		return os.Hostname()
	}, new(func() (string, error))),
	expr.Function("Distance", func(p ...any) (any, error) {
		return distance(p[0].(string), p[1].(string), p[2].(string), p[3].(string))
	}, new(func(string, string, string, string) (float64, error))),
	expr.Function("AverageInterval", func(p ...any) (any, error) {
		return intervalStat(p[0], false)
	}, new(func([]time.Time) time.Duration), new(func([]any) time.Duration)),
	expr.Function("MedianInterval", func(p ...any) (any, error) {
		return intervalStat(p[0], true)
	}, new(func([]time.Time) time.Duration), new(func([]any) time.Duration)),

	// URLs.
	expr.Function("PathEscape", str1(url.PathEscape), new(func(string) string)),
	expr.Function("QueryEscape", str1(url.QueryEscape), new(func(string) string)),
	expr.Function("PathUnescape", str1(keepOnError(url.PathUnescape)), new(func(string) string)),
	expr.Function("QueryUnescape", str1(keepOnError(url.QueryUnescape)), new(func(string) string)),
	expr.Function("ParseUri", func(p ...any) (any, error) {
		out := map[string][]string{}
		u, err := url.Parse(p[0].(string))
		if err != nil {
			return out, nil
		}
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return out, nil
		}
		for k, v := range q {
			out[k] = v
		}
		return out, nil
	}, new(func(string) map[string][]string)),
	expr.Function("ParseQuery", func(p ...any) (any, error) {
		return lenientQuery(p[0].(string)), nil
	}, new(func(string) url.Values)),
	expr.Function("ExtractQueryParam", func(p ...any) (any, error) {
		_, q, ok := strings.Cut(p[0].(string), "?")
		if v := lenientQuery(q)[p[1].(string)]; ok && v != nil {
			return v, nil
		}
		return []string{}, nil
	}, new(func(string, string) []string)),

	// JSON.
	expr.Function("JsonExtract", func(p ...any) (any, error) {
		return jsonExtractString(p[0].(string), dottedPath(p[1].(string)), false), nil
	}, new(func(string, string) string)),
	// As in the reference, only the first path argument counts, and
	// JsonExtractLib only takes it as a []string, which a profile cannot
	// pass (expr passes variadic strings one by one and refuses a list):
	// it always fails.
	expr.Function("JsonExtractLib", func(p ...any) (any, error) {
		path, ok := p[1].([]string)
		if !ok {
			return nil, fmt.Errorf("interface conversion: interface {} is %T, not []string", p[1])
		}
		return jsonExtractString(p[0].(string), path, false), nil
	}, new(func(string, ...string) string)),
	expr.Function("JsonExtractUnescape", func(p ...any) (any, error) {
		return jsonExtractString(p[0].(string), stringArgs(p[1:2]), true), nil
	}, new(func(string, ...string) string)),
	expr.Function("JsonExtractSlice", func(p ...any) (any, error) {
		var out []any
		if raw, ok := jsonLookup(p[0].(string), dottedPath(p[1].(string))); ok {
			if err := json.Unmarshal(raw, &out); err != nil {
				out = nil
			}
		}
		return out, nil
	}, new(func(string, string) []any)),
	expr.Function("JsonExtractObject", func(p ...any) (any, error) {
		var out map[string]any
		if raw, ok := jsonLookup(p[0].(string), dottedPath(p[1].(string))); ok {
			if err := json.Unmarshal(raw, &out); err != nil {
				out = nil
			}
		}
		return out, nil
	}, new(func(string, string) map[string]any)),
	expr.Function("ToJsonString", func(p ...any) (any, error) {
		b, err := json.Marshal(p[0])
		if err != nil {
			return "", nil
		}
		return string(b), nil
	}, new(func(any) string)),

	// Lists (untyped, like the reference).
	// Outside data (HelperConfig): CTI, GeoIP, hub data files, stash.
	expr.Function("CrowdsecCTI", func(p ...any) (any, error) {
		return state().cti.lookup(p[0].(string))
	}, new(func(string) (*CTIItem, error))),
	expr.Function("GeoIPEnrich", func(p ...any) (any, error) {
		return geoIPEnrich(p[0].(string))
	}, new(func(string) *GeoIPCity)),
	expr.Function("GeoIPASNEnrich", func(p ...any) (any, error) {
		return geoIPASNEnrich(p[0].(string))
	}, new(func(string) *GeoIPASN)),
	expr.Function("GeoIPRangeEnrich", func(p ...any) (any, error) {
		return geoIPRangeEnrich(p[0].(string))
	}, new(func(string) *net.IPNet)),
	expr.Function("File", func(p ...any) (any, error) {
		return state().files.strings(p[0].(string)), nil
	}, new(func(string) []string)),
	expr.Function("RegexpInFile", func(p ...any) (any, error) {
		return regexpInFile(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) bool)),
	expr.Function("GetFromStash", func(p ...any) (any, error) {
		return getFromStash(p[0].(string), p[1].(string))
	}, new(func(string, string) (string, error))),
	expr.Function("SetInStash", func(p ...any) (any, error) {
		// A profile can only pass nil (expr has no *time.Duration
		// values): halapi takes it as the stash's TTL, where the
		// reference's type assertion fails.
		exp, _ := p[3].(*time.Duration)
		return setInStash(p[0].(string), p[1].(string), p[2].(string), exp), nil
	}, new(func(string, string, string, *time.Duration) error)),
	expr.Function("LookupHost", func(p ...any) (any, error) {
		return lookupHost(p[0].(string)), nil
	}, new(func(string) []string)),

	// Parsing.
	expr.Function("XMLGetAttributeValue", func(p ...any) (any, error) {
		return xmlGetAttributeValue(p[0].(string), p[1].(string), p[2].(string)), nil
	}, new(func(string, string, string) string)),
	expr.Function("XMLGetNodeValue", func(p ...any) (any, error) {
		return xmlGetNodeValue(p[0].(string), p[1].(string)), nil
	}, new(func(string, string) string)),
	expr.Function("LibInjectionIsSQLI", func(p ...any) (any, error) {
		return isSQLI(p[0].(string)), nil
	}, new(func(string) bool)),
	expr.Function("LibInjectionIsXSS", func(p ...any) (any, error) {
		return isXSS(p[0].(string)), nil
	}, new(func(string) bool)),
	expr.Function("JA4H", func(p ...any) (any, error) {
		return JA4H(p[0].(*http.Request))
	}, new(func(*http.Request) string)),
	expr.Function("ParseKV", func(p ...any) (any, error) {
		return nil, parseKV(p[0].(string), p[1].(map[string]any), p[2].(string))
	}, new(func(string, map[string]any, string) error)),
	expr.Function("ParseKVLax", func(p ...any) (any, error) {
		return nil, parseKVLax(p[0].(string), p[1].(map[string]any), p[2].(string))
	}, new(func(string, map[string]any, string) error)),
	expr.Function("UnmarshalJSON", func(p ...any) (any, error) {
		return nil, unmarshalJSON(p[0].(string), p[1].(map[string]any), p[2].(string))
	}, new(func(string, map[string]any, string) error)),

	expr.Function("Flatten", func(p ...any) (any, error) {
		return flatten(nil, reflect.ValueOf(p)), nil
	}),
	expr.Function("Distinct", func(p ...any) (any, error) {
		return distinct(p[0]), nil
	}),
	expr.Function("FlattenDistinct", func(p ...any) (any, error) {
		return distinct(flatten(nil, reflect.ValueOf(p))), nil
	}),
}

// compile compiles src against the profile environment; asBool requires a
// boolean result (filters). Data files named by a literal in File or
// RegexpInFile are loaded now, so a missing one is logged at load time.
func compile(src string, asBool bool) (*vm.Program, error) {
	if tree, err := parser.Parse(src); err == nil {
		preloadDataFiles(tree.Node)
	}
	if asBool {
		// Type-check only: a filter whose static type is not bool is
		// refused at load time. The program that runs is compiled without
		// AsBool so that a dynamically non-bool result reaches the
		// evaluator's own check ("unexpected type ... while running ...",
		// the reference's message) instead of expr's cast error.
		opts := append(slices.Clip(exprOptions), expr.AsBool())
		if _, err := expr.Compile(src, opts...); err != nil {
			return nil, oneLineExprError(err)
		}
	}
	prog, err := expr.Compile(src, exprOptions...)
	if err != nil {
		return nil, oneLineExprError(err)
	}
	return prog, nil
}

type dataFileFinder struct{}

func (dataFileFinder) Visit(n *ast.Node) {
	call, ok := (*n).(*ast.CallNode)
	if !ok {
		return
	}
	id, ok := call.Callee.(*ast.IdentifierNode)
	if !ok {
		return
	}
	arg := func(i int) (string, bool) {
		if i >= len(call.Arguments) {
			return "", false
		}
		lit, ok := call.Arguments[i].(*ast.StringNode)
		if !ok {
			return "", false
		}
		return lit.Value, true
	}
	switch id.Value {
	case "File":
		if name, ok := arg(0); ok {
			state().files.strings(name)
		}
	case "RegexpInFile":
		if name, ok := arg(1); ok {
			state().files.regexpList(name)
		}
	}
}

func preloadDataFiles(n ast.Node) {
	ast.Walk(&n, dataFileFinder{})
}

// oneLineExprError drops the multi-line source snippet expr appends to its
// errors, keeping the message and the position.
func oneLineExprError(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		if fe.Line > 0 {
			return fmt.Errorf("%s (%d:%d)", strings.TrimSpace(fe.Message), fe.Line, fe.Column)
		}
		return errors.New(strings.TrimSpace(fe.Message))
	}
	return errors.New(strings.Join(strings.Fields(err.Error()), " "))
}

func str1(f func(string) string) func(...any) (any, error) {
	return func(p ...any) (any, error) { return f(p[0].(string)), nil }
}

func str2(f func(string, string) string) func(...any) (any, error) {
	return func(p ...any) (any, error) { return f(p[0].(string), p[1].(string)), nil }
}

func keepOnError(f func(string) (string, error)) func(string) string {
	return func(s string) string {
		if r, err := f(s); err == nil {
			return r
		}
		return s
	}
}

func stringArgs(p []any) []string {
	out := make([]string, 0, len(p))
	for _, a := range p {
		switch v := a.(type) {
		case string:
			out = append(out, v)
		case []string:
			out = append(out, v...)
		}
	}
	return out
}

func ipInRange(ip, cidr string) bool {
	addr := net.ParseIP(ip)
	if addr == nil {
		return false
	}
	_, n, err := net.ParseCIDR(cidr)
	return err == nil && n.Contains(addr)
}

func ipToRange(ip, mask string) string {
	bits, err := strconv.Atoi(strings.TrimPrefix(mask, "/"))
	if err != nil {
		return ""
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	pfx, err := addr.Prefix(bits)
	if err != nil {
		return ""
	}
	return pfx.String()
}

// globMatch matches name against a pattern where '*' is any (possibly empty)
// run of bytes and '?' exactly one byte.
func globMatch(pattern, name string) bool {
	for pattern != "" {
		switch pattern[0] {
		case '*':
			for i := 0; i <= len(name); i++ {
				if globMatch(pattern[1:], name[i:]) {
					return true
				}
			}
			return false
		case '?':
			if name == "" {
				return false
			}
		default:
			if name == "" || pattern[0] != name[0] {
				return false
			}
		}
		pattern, name = pattern[1:], name[1:]
	}
	return name == ""
}

// parseUnix formats a unix timestamp (fractional part ignored) as local-time
// RFC 3339, "" when it is not a positive integer.
func parseUnix(v string) string {
	sec, _, _ := strings.Cut(v, ".")
	i, err := strconv.ParseInt(sec, 10, 64)
	if err != nil || i <= 0 {
		return ""
	}
	return time.Unix(i, 0).Format(time.RFC3339)
}

// distance is the great-circle distance in km between two points given as
// decimal strings; 0 when either point is 0,0.
func distance(lat1s, lon1s, lat2s, lon2s string) (float64, error) {
	var v [4]float64
	for i, s := range []string{lat1s, lon1s, lat2s, lon2s} {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("distance: %q is not a float: %w", s, err)
		}
		v[i] = f
	}
	if (v[0] == 0 && v[1] == 0) || (v[2] == 0 && v[3] == 0) {
		return 0, nil
	}
	// Haversine, with the reference's order of operations so that the
	// floats agree to the last bit.
	const earthRadiusKm = 6371
	rad := func(d float64) float64 { return d * math.Pi / 180 }
	lat1, lon1, lat2, lon2 := rad(v[0]), rad(v[1]), rad(v[2]), rad(v[3])
	a := math.Pow(math.Sin((lat2-lat1)/2), 2) + math.Cos(lat1)*math.Cos(lat2)*math.Pow(math.Sin((lon2-lon1)/2), 2)
	c := 2 * math.Atan2(math.Sqrt(a), math.Sqrt(1-a))
	return c * earthRadiusKm, nil
}

func intervalStat(arg any, median bool) (time.Duration, error) {
	var ts []time.Time
	switch v := arg.(type) {
	case []time.Time:
		ts = slices.Clone(v)
	case []any:
		for i, x := range v {
			t, ok := x.(time.Time)
			if !ok {
				return 0, fmt.Errorf("element %d is not a time", i)
			}
			ts = append(ts, t)
		}
	default:
		return 0, errors.New("expected a list of times")
	}
	if len(ts) < 2 {
		return 0, errors.New("need at least two times")
	}
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	gaps := make([]time.Duration, len(ts)-1)
	var total time.Duration
	for i := 1; i < len(ts); i++ {
		gaps[i-1] = ts[i].Sub(ts[i-1])
		total += gaps[i-1]
	}
	if !median {
		return total / time.Duration(len(gaps)), nil
	}
	slices.Sort(gaps)
	n := len(gaps)
	if n%2 == 1 {
		return gaps[n/2], nil
	}
	return (gaps[n/2-1] + gaps[n/2]) / 2, nil
}

// lenientQuery parses a query string like url.ParseQuery but never fails:
// ';' is not a separator and invalid escapes are kept literally.
func lenientQuery(q string) url.Values {
	out := url.Values{}
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, v = lenientUnescape(k), lenientUnescape(v)
		out[k] = append(out[k], v)
	}
	return out
}

func lenientUnescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(n))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// dottedPath turns "a.b[0].c" into the key path ["a", "b", "[0]", "c"].
func dottedPath(target string) []string {
	if !strings.HasPrefix(target, "[") {
		target = strings.ReplaceAll(target, "[", ".[")
	}
	return strings.Split(target, ".")
}

// jsonLookup follows path (object keys, "[i]" array indexes) inside blob and
// returns the raw JSON of the value found.
func jsonLookup(blob string, path []string) (json.RawMessage, bool) {
	cur := json.RawMessage(blob)
	for _, key := range path {
		if strings.HasPrefix(key, "[") && strings.HasSuffix(key, "]") {
			i, err := strconv.Atoi(key[1 : len(key)-1])
			if err != nil {
				return nil, false
			}
			var arr []json.RawMessage
			if json.Unmarshal(cur, &arr) != nil || i < 0 || i >= len(arr) {
				return nil, false
			}
			cur = arr[i]
			continue
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal(cur, &obj) != nil {
			return nil, false
		}
		v, ok := obj[key]
		if !ok {
			return nil, false
		}
		cur = v
	}
	if !json.Valid(cur) {
		return nil, false
	}
	return cur, true
}

// jsonExtractString returns the value at path: strings without their quotes
// (escape sequences decoded only when unescape), other values as raw JSON,
// "" when absent.
func jsonExtractString(blob string, path []string, unescape bool) string {
	raw, ok := jsonLookup(blob, path)
	if !ok {
		return ""
	}
	s := strings.TrimSpace(string(raw))
	if !strings.HasPrefix(s, `"`) {
		if unescape {
			return "" // the reference's string getter refuses non-strings
		}
		return s
	}
	if !unescape {
		return s[1 : len(s)-1]
	}
	var out string
	if json.Unmarshal(raw, &out) != nil {
		return ""
	}
	return out
}

func flatten(out []any, v reflect.Value) []any {
	if v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if v.Kind() == reflect.Slice || v.Kind() == reflect.Array {
		for i := range v.Len() {
			out = flatten(out, v.Index(i))
		}
		return out
	}
	if !v.IsValid() {
		return append(out, nil)
	}
	return append(out, v.Interface())
}

func distinct(arg any) any {
	list, ok := arg.([]any)
	if !ok {
		if arg == nil {
			return nil
		}
		rv := reflect.ValueOf(arg)
		if rv.Kind() != reflect.Slice && rv.Kind() != reflect.Array {
			return nil
		}
		list = make([]any, rv.Len())
		for i := range rv.Len() {
			list[i] = rv.Index(i).Interface()
		}
	}
	seen := map[any]bool{}
	out := make([]any, 0, len(list))
	for _, v := range list {
		if reflect.TypeOf(v) != nil && !reflect.TypeOf(v).Comparable() {
			out = append(out, v)
			continue
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}
