package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// resolve parses args as serve's command line and applies the config
// files, without serving.
func resolve(t *testing.T, args ...string) (*serveFlags, *pflag.FlagSet, string, error) {
	t.Helper()
	c, f := newServeCmd()
	polishHelp(c) // as in the binary: help wrappers around flag values
	if err := c.ParseFlags(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	var warn bytes.Buffer
	err := resolveServeFlags(c.Flags(), f, &warn)
	return f, c.Flags(), warn.String(), err
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigFileSetsEverySeveFlag: every serve flag (iterated from the
// flag set, so a new flag is covered) can be set from --config, to a value
// other than its default.
func TestConfigFileSetsEveryServeFlag(t *testing.T) {
	c, _ := newServeCmd()
	var yml strings.Builder
	want := map[string]any{}
	n := 0
	c.Flags().VisitAll(func(fl *pflag.Flag) {
		if fileOnlyFlag(fl.Name) || fl.Name == flagCrowdsecConfig { // the latter: TestCrowdsecConfigEqualsFlags
			return
		}
		n++
		switch typ := fl.Value.Type(); typ {
		case "bool":
			v := fl.DefValue != "true"
			fmt.Fprintf(&yml, "%s: %v\n", fl.Name, v)
			want[fl.Name] = fmt.Sprint(v)
		case "int", "uint64":
			fmt.Fprintf(&yml, "%s: 4242\n", fl.Name)
			want[fl.Name] = "4242"
		case "duration":
			fmt.Fprintf(&yml, "%s: 1h23m\n", fl.Name)
			want[fl.Name] = (83 * time.Minute).String()
		case "string":
			fmt.Fprintf(&yml, "%s: %q\n", fl.Name, "v-"+fl.Name)
			want[fl.Name] = "v-" + fl.Name
		case "stringSlice", "stringArray":
			fmt.Fprintf(&yml, "%s:\n  - a-%s\n  - b\n", fl.Name, fl.Name)
			want[fl.Name] = []string{"a-" + fl.Name, "b"}
		default:
			t.Fatalf("flag --%s has type %s: teach this test (and check readConfigFile) about it", fl.Name, typ)
		}
	})
	if n < 60 {
		t.Fatalf("only %d serve flags seen", n)
	}
	cfg := writeFile(t, t.TempDir(), "halapi.yaml", yml.String())
	c, _ = newServeCmd()
	polishHelp(c)
	if err := c.ParseFlags([]string{"--config", cfg}); err != nil {
		t.Fatal(err)
	}
	var f configFlags
	f.config = cfg
	if _, err := applyConfigFiles(c.Flags(), f, os.Stderr); err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		fl := c.Flags().Lookup(name)
		if !fl.Changed {
			t.Errorf("--%s not marked as set", name)
		}
		if l, ok := w.([]string); ok {
			if got := baseValue(fl.Value).(pflag.SliceValue).GetSlice(); !slices.Equal(got, l) {
				t.Errorf("--%s = %v, want %v", name, got, l)
			}
			continue
		}
		if got := fl.Value.String(); got != w {
			t.Errorf("--%s = %q, want %q", name, got, w)
		}
	}
}

func TestConfigFileErrorsAndPrecedence(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ body, want string }{
		{"max-conections-per-ip: 3\n", `key "max-conections-per-ip": unknown key`},
		{"config: other.yaml\n", `key "config": cannot be set`},
		{"listen:\n  - a\n  - b\n", `key "listen": takes one value, not a list`},
		{"listen:\n  host: x\n", `key "listen": expected a value, not a mapping`},
		{"max-connections-per-ip: many\n", `invalid argument "many"`},
		{"- a\n", "expected a mapping"},
		{"listen: a\nlisten: b\n", "listen"},
		{"max_connections_per_ip: 3\n", "did you mean max-connections-per-ip?"},
	} {
		p := writeFile(t, dir, "c.yaml", tc.body)
		if _, _, _, err := resolve(t, "--config", p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.body, err, tc.want)
		}
	}
	// empty file: defaults
	p := writeFile(t, dir, "empty.yaml", "# nothing\n")
	if f, _, _, err := resolve(t, "--config", p); err != nil || f.maxConnsPerIP != 256 {
		t.Fatalf("empty file: %v %d", err, f.maxConnsPerIP)
	}
	// command line beats the file, list values replace (not append to)
	// the default, and a comma list works as on the command line
	p = writeFile(t, dir, "c.yaml", "max-connections-per-ip: 3\nlisten: 127.0.0.1:9999\nagents-allowed-ou: a,b\ntrusted-ips: [10.0.0.1]\n")
	f, _, _, err := resolve(t, "--config", p, "--listen", "127.0.0.1:7777", "--trusted-ips", "10.9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	if f.maxConnsPerIP != 3 || f.listen != "127.0.0.1:7777" || !slices.Equal(f.pki.agentOUs, []string{"a", "b"}) ||
		!slices.Equal(f.trustedIPs, []string{"10.9.9.9"}) {
		t.Fatalf("resolved %d %s %v %v", f.maxConnsPerIP, f.listen, f.pki.agentOUs, f.trustedIPs)
	}
}

// csEnv points the testdata config.yaml at a temp dir holding its
// console.yaml.
func csEnv(t *testing.T) (dir, cfg string) {
	t.Helper()
	dir = t.TempDir()
	b, err := os.ReadFile("testdata/crowdsec/console.yaml")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "console.yaml", string(b))
	t.Setenv("CS_CONF", dir)
	t.Setenv("REGISTRATION_TOKEN", "0123456789abcdef0123456789abcdef-token")
	return dir, "testdata/crowdsec/config.yaml"
}

// csEquivalentFlags are the settings of testdata/crowdsec/config.yaml
// written as serve flags.
func csEquivalentFlags(dir string) []string {
	return []string{
		"--listen", "0.0.0.0:8080", "--plain-http=false",
		"--tls-cert", dir + "/ssl/lapi.pem", "--tls-key", dir + "/ssl/lapi-key.pem",
		"--client-ca", dir + "/ssl/ca.pem", "--crl", dir + "/ssl/crl.pem",
		"--agents-allowed-ou", "agent-ou", "--bouncers-allowed-ou", "bouncer-ou",
		"--trusted-ips", "127.0.0.1,::1,10.0.0.0/24", "--trusted-proxies", "10.0.0.2",
		"--auto-registration-token", "0123456789abcdef0123456789abcdef-token", "--auto-registration-ranges", "10.0.0.0/24",
		"--disable-remote-registration=false",
		"--profiles", dir + "/profiles.yaml",
		"--capi-disable=false", "--capi-credentials", dir + "/online_api_credentials.yaml",
		"--console-share-manual-decisions=true", "--console-share-custom=true", "--console-share-tainted=false",
		"--console-share-context=false", "--console-management=false",
		"--flush-max-items", "20000", "--flush-max-age", "14d", "--flush-metrics-max-age", "3d",
		"--flush-agents-autodelete-cert", "60m", "--flush-agents-autodelete-password", "30d",
		"--flush-bouncers-autodelete-cert", "60m", "--flush-bouncers-autodelete-api-key", "1d12h",
		"--metrics-listen", "127.0.0.1:6060", "--log-level", "info",
		"--hub-data-dir", "/var/lib/crowdsec/data/",
		"--notification-dir", dir + "/notifications/", "--plugin-dir", "/usr/local/lib/crowdsec/plugins/",
		"--plugin-user", "nobody", "--plugin-group", "nogroup",
	}
}

// TestCrowdsecConfigEqualsFlags: the reference's config.yaml and the same
// settings given as flags resolve to the same effective configuration;
// the settings halapi ignores are warned about, one line each.
func TestCrowdsecConfigEqualsFlags(t *testing.T) {
	dir, cfg := csEnv(t)
	fromFile, _, warn, err := resolve(t, "--crowdsec-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	fromFlags, _, _, err := resolve(t, csEquivalentFlags(dir)...)
	if err != nil {
		t.Fatal(err)
	}
	a, b := *fromFile, *fromFlags
	a.capi.fl, b.capi.fl, a.files, b.files = nil, nil, configFlags{}, configFlags{}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("--crowdsec-config resolves to\n%+v\nthe flags to\n%+v", a, b)
	}
	for _, w := range []string{"api.server.tls.cache_expiration: ignored (no halapi equivalent)",
		"not LAPI settings, not used by serve: api.client, common (but log_level), config_paths.config_dir, config_paths.hub_dir, config_paths.index_path, config_paths.simulation_path, crowdsec_service, cscli, db_config (connection: read by `halapi import`)"} {
		if !strings.Contains(warn, "WARNING: --crowdsec-config "+w+"\n") {
			t.Errorf("no warning %q in:\n%s", w, warn)
		}
	}
	if strings.Count(warn, "\n") != 2 {
		t.Errorf("want exactly 2 warning lines, got:\n%s", warn)
	}
	if strings.Contains(warn, "token") && strings.Contains(warn, "0123456789abcdef") {
		t.Error("a warning shows the registration token")
	}

	// halapi's file may name CrowdSec's: one file for the systemd unit
	own := writeFile(t, t.TempDir(), "halapi.yaml", "crowdsec-config: "+cfg+"\nflush-max-items: 300\n")
	f, _, _, err := resolve(t, "--config", own)
	if err != nil || f.flushMaxItems != 300 || f.flushMaxAge != "14d" || f.tlsCert != dir+"/ssl/lapi.pem" {
		t.Fatalf("crowdsec-config named in --config: %v %d %s %s", err, f.flushMaxItems, f.flushMaxAge, f.tlsCert)
	}

	// precedence: command line > --config > --crowdsec-config
	own = writeFile(t, t.TempDir(), "halapi.yaml", "flush-max-items: 300\nlisten: 127.0.0.1:9000\n")
	f, _, _, err = resolve(t, "--crowdsec-config", cfg, "--config", own, "--listen", "127.0.0.1:9100")
	if err != nil {
		t.Fatal(err)
	}
	if f.flushMaxItems != 300 || f.listen != "127.0.0.1:9100" || f.flushMaxAge != "14d" {
		t.Fatalf("precedence: items %d listen %s age %s", f.flushMaxItems, f.listen, f.flushMaxAge)
	}
}

// TestCrowdsecConfigVariants: what CrowdSec does without a setting is
// what the translation does (plain http, no CAPI, no metrics, console
// defaults), .local is merged, and a plain http listen_uri off loopback
// needs --allow-plain-http-remote.
func TestCrowdsecConfigVariants(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CS_CONF", dir)
	minimal := "common:\n  log_level: warning\napi:\n  server:\n    listen_uri: 127.0.0.1:8080\n    console_path: ${CS_CONF}/none.yaml\n    use_forwarded_for_headers: true\n" +
		"db_config:\n  flush:\n    max_items: 100\n    agents_autodelete:\n      api_key: 1d\n"
	p := writeFile(t, dir, "config.yaml", minimal)
	f, _, warn, err := resolve(t, "--crowdsec-config", p)
	if err != nil {
		t.Fatal(err)
	}
	if !f.pki.plainHTTP || !f.capi.disable || f.metricsListen != "" || !f.metricsExplicit ||
		!f.capi.console.ShareCustom || !f.capi.console.ShareTainted || f.capi.console.ShareManualDecisions ||
		!slices.Equal(f.trustedProxies, []string{"0.0.0.0/0"}) || f.flushMaxItems != 100 || f.flushMaxAge != "7d" || f.logLevel != "warn" {
		t.Fatalf("minimal: %+v", *f)
	}
	for _, w := range []string{"use_forwarded_for_headers without trusted_proxies", "max_age absent",
		"agents_autodelete.api_key: ignored"} {
		if !strings.Contains(warn, w) {
			t.Errorf("no warning %q in:\n%s", w, warn)
		}
	}

	// a key without a certificate: plain http, as CrowdSec
	writeFile(t, dir, "config.yaml.local", "api:\n  server:\n    tls:\n      key_file: /k.pem\n")
	if f, _, warn, err := resolve(t, "--crowdsec-config", p); err != nil || !f.pki.plainHTTP || f.tlsKey != "" ||
		!strings.Contains(warn, "api.server.tls.key_file: ignored (no tls.cert_file") {
		t.Fatalf("key_file alone: %v %q", err, warn)
	}

	// config.yaml.local overrides
	writeFile(t, dir, "config.yaml.local", "api:\n  server:\n    listen_uri: 127.0.0.1:9090\n")
	if f, _, _, err := resolve(t, "--crowdsec-config", p); err != nil || f.listen != "127.0.0.1:9090" {
		t.Fatalf(".local: %v %s", err, f.listen)
	}

	// plain http off loopback
	writeFile(t, dir, "config.yaml.local", "api:\n  server:\n    listen_uri: 0.0.0.0:8080\n")
	if _, _, _, err := resolve(t, "--crowdsec-config", p); err == nil || !strings.Contains(err.Error(), "--allow-plain-http-remote") ||
		!strings.Contains(err.Error(), "listen_uri 0.0.0.0:8080") {
		t.Fatalf("plain http off loopback from the CrowdSec config: %v", err)
	}
	if f, _, _, err := resolve(t, "--crowdsec-config", p, "--allow-plain-http-remote"); err != nil || !f.pki.plainHTTP {
		t.Fatalf("with --allow-plain-http-remote: %v", err)
	}
	if f, _, _, err := resolve(t, "--crowdsec-config", p, "--plain-http=false"); err != nil || f.pki.plainHTTP {
		t.Fatalf("with --plain-http=false: %v", err)
	}
	if _, _, _, err := resolve(t, "--listen", "0.0.0.0:8080", "--plain-http"); err == nil || !strings.Contains(err.Error(), "only allowed on a loopback") ||
		!strings.Contains(err.Error(), "--allow-plain-http-remote") {
		t.Fatalf("--plain-http off loopback: %v", err)
	}

	// no LAPI in the file
	p = writeFile(t, dir, "agent.yaml", "api:\n  client:\n    credentials_path: x\n")
	if _, _, _, err := resolve(t, "--crowdsec-config", p); err == nil || !strings.Contains(err.Error(), "no api.server") {
		t.Fatalf("agent-only config: %v", err)
	}
	if _, _, _, err := resolve(t, "--crowdsec-config", filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// The plain-http refusal is one line from the binary, before anything is
// written.
func TestPlainHTTPRemoteRefusedByBinary(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	_, errs, err := run(t, "serve", "--listen", "0.0.0.0:0", "--plain-http", "--data-dir", data)
	if err == nil || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "--allow-plain-http-remote") {
		t.Fatalf("%v %q", err, errs)
	}
	if _, err := os.Stat(data); err == nil {
		t.Fatal("data dir created by a refused start")
	}
}
