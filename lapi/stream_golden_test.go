package lapi

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite lapi/testdata/stream_golden.json from the current encoder")

// uuidRe matches the random UUIDs the API node draws for decisions; the
// golden bodies hold a placeholder instead (checkUUIDs checks their shape).
var uuidRe = regexp.MustCompile(`"uuid":"[^"]*"`)

// goldenRequests drives one fixed scenario (fixed clock, fixed order of
// writes) through the handler and returns each answer body by name. The
// golden file was recorded from the encoder that built whole bodies in
// memory (before streaming), so the streamed and shared encodings are
// held to the exact bytes go-cs-bouncer and the firewall bouncers parsed
// then.
func goldenRequests(t *testing.T, opts ...reqOpt) map[string]string {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	e.bouncer("nginx", "key2")
	now := e.now()
	post := func(alerts ...any) {
		t.Helper()
		e.expect(e.do("POST", "/v1/alerts", alerts, withToken(tok)), 201)
	}
	post(manualAlert("Ip", "1.2.3.4", "ban", "4h", now),
		manualAlert("Ip", "1.2.3.4", "ban", "1h", now), // shorter: hidden by dedup
		manualAlert("Range", "10.0.0.0/24", "captcha", "36h30m10s", now),
		manualAlert("Ip", "2001:db8::1", "ban", "59s", now),
		manualAlert("Country", "FR", "ban", "2h", now),
		manualAlert("Username", "bob \"the\" <admin> & \\ \t\u00e9\u2028", "ban", "10m", now),
		manualAlert("Ip", "5.6.7.8", "ban", "1500ms", now))
	post(agentAlert("9.9.9.9", now))
	// decisions with odd scenario strings, as cscli import and lists make them
	a := manualAlert("Ip", "7.7.7.7", "ban", "100000h", now)
	a["decisions"].([]any)[0].(map[string]any)["scenario"] = "manual 'ban' from 'x' </script>"
	a["decisions"].([]any)[0].(map[string]any)["origin"] = "lists"
	post(a)
	e.advance(2 * time.Second) // 5.6.7.8 (1.5 s) is now expired
	out := map[string]string{}
	get := func(name, path, key string) {
		t.Helper()
		r := e.expect(e.do("GET", path, nil, append([]reqOpt{withKey(key)}, opts...)...), 200)
		out[name] = r.body
	}
	get("startup", "/v1/decisions/stream?startup=true", "key1")
	get("startup_all_scopes", "/v1/decisions/stream?startup=true&scopes=ip,range,country,username&dedup=false", "key2")
	get("delta_empty", "/v1/decisions/stream", "key1")
	e.advance(time.Second)
	post(manualAlert("Ip", "4.4.4.4", "ban", "1h", e.now()))
	e.expect(e.do("DELETE", "/v1/decisions?ip=1.2.3.4", nil, withToken(tok)), 200)
	get("delta", "/v1/decisions/stream", "key1")
	get("live_all", "/v1/decisions", "key1")
	get("live_ip", "/v1/decisions?ip=10.0.0.7", "key1")
	get("live_none", "/v1/decisions?ip=8.8.8.8", "key1")
	e.advance(5 * time.Hour)
	get("delta_expiry", "/v1/decisions/stream", "key1")
	get("startup_late", "/v1/decisions/stream?startup=true", "key1")
	return out
}

func TestStreamGolden(t *testing.T) {
	checkGolden(t, goldenRequests(t))
}

// With Accept-Encoding: gzip (what Go's http.Transport sends), the
// decompressed bodies are the same bytes.
func TestStreamGoldenGzip(t *testing.T) {
	if *updateGolden {
		t.Skip()
	}
	checkGolden(t, goldenRequests(t, withHeader("Accept-Encoding", "gzip")))
}

func checkGolden(t *testing.T, got map[string]string) {
	t.Helper()
	for name, body := range got {
		var v any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Errorf("%s: not JSON: %v\n%s", name, err, body)
		}
		for _, m := range uuidRe.FindAllString(body, -1) {
			if !regexp.MustCompile(`^"uuid":"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"$`).MatchString(m) {
				t.Errorf("%s: bad uuid %s", name, m)
			}
		}
		got[name] = uuidRe.ReplaceAllString(body, `"uuid":"U"`)
	}
	path := filepath.Join("testdata", "stream_golden.json")
	if *updateGolden {
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]string
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if len(want) != len(got) {
		t.Errorf("%d answers, golden has %d", len(got), len(want))
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s differs from the recorded encoder:\n got %s\nwant %s", name, got[name], w)
		}
	}
}
