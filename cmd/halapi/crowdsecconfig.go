package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/halapi/halapi/importer"
	"gopkg.in/yaml.v3"
)

// crowdsecSettings translates the LAPI settings of a CrowdSec v1.7.x
// config.yaml (api.server, db_config.flush, prometheus; console.yaml
// through console_path) into serve flag values. As CrowdSec does, the
// file is merged with FILE.local and ${VAR}/$VAR are expanded from the
// environment when set. Each setting halapi does not honour is returned as
// one warning line; the sections that are not LAPI settings are named
// once.
func crowdsecSettings(path string, lookupEnv func(string) (string, bool)) (map[string]configValue, []string, error) {
	doc, err := readCrowdsecYAML(path, lookupEnv)
	if err != nil {
		return nil, nil, err
	}
	t := &csTranslator{out: map[string]configValue{}}
	server, ok := doc.sub("api").sub("server"), doc.sub("api").has("server")
	if !ok || server == nil {
		return nil, nil, fmt.Errorf("--crowdsec-config %s: no api.server section (the file does not configure a LAPI)", path)
	}
	if err := t.server(path, server); err != nil {
		return nil, nil, err
	}
	if lv, _ := scalar(doc.sub("common")["log_level"]); lv != "" && server["log_level"] == nil {
		// the LAPI logs at common.log_level unless api.server.log_level is set
		if m, ok := csLogLevels[strings.ToLower(lv)]; ok {
			t.set("log-level", "common.log_level", m)
		}
	}
	t.flush(doc.sub("db_config"))
	t.prometheus(doc.sub("prometheus"), doc.has("prometheus"))
	if err := t.helpers(path, doc); err != nil {
		return nil, nil, err
	}

	var skipped []string
	for _, k := range doc.keys() {
		switch k {
		case "api":
			for _, ak := range doc.sub("api").keys() {
				if ak != "server" && ak != "cti" {
					skipped = append(skipped, "api."+ak)
				}
			}
		case "db_config":
			skipped = append(skipped, "db_config (connection: read by `halapi import`)")
		case "prometheus":
		case "common":
			skipped = append(skipped, "common (but log_level)")
		case "config_paths":
			skipped = append(skipped, t.notifyPaths(doc.sub("config_paths"))...)
		case "plugin_config":
			t.pluginConfig(doc.sub("plugin_config"))
		default:
			skipped = append(skipped, k)
		}
	}
	if len(skipped) > 0 {
		t.warn("not LAPI settings, not used by serve: %s", strings.Join(skipped, ", "))
	}
	return t.out, t.warnings, nil
}

type csMap map[string]any

func (m csMap) sub(k string) csMap {
	if m == nil {
		return nil
	}
	v, _ := m[k].(map[string]any)
	return v
}

func (m csMap) has(k string) bool { _, ok := m[k]; return ok }

func (m csMap) keys() []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// readCrowdsecYAML reads path (+ path.local merged over it) with
// CrowdSec's strict expansion (importer.ReadConfigYAML); errors name the flag.
func readCrowdsecYAML(path string, lookupEnv func(string) (string, bool)) (csMap, error) {
	m, err := importer.ReadConfigYAML(path, lookupEnv)
	var pe *fs.PathError
	switch {
	case err == nil:
		return m, nil
	case errors.As(err, &pe):
		return nil, fmt.Errorf("--crowdsec-config: %w", err)
	default:
		return nil, fmt.Errorf("--crowdsec-config %w", err)
	}
}

type csTranslator struct {
	out      map[string]configValue
	warnings []string
}

func (t *csTranslator) warn(format string, a ...any) {
	t.warnings = append(t.warnings, fmt.Sprintf(format, a...))
}

func (t *csTranslator) set(flag, key, v string) {
	t.out[flag] = configValue{scalar: v, from: key}
}

func (t *csTranslator) setList(flag, key string, v []string) {
	t.out[flag] = configValue{list: v, isList: true, from: key}
}

func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case int:
		return strconv.Itoa(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	}
	return "", false
}

func list(v any) ([]string, bool) {
	switch x := v.(type) {
	case nil:
		return nil, true
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := scalar(e)
			if !ok {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	}
	if s, ok := scalar(v); ok {
		return []string{s}, true
	}
	return nil, false
}

func truthy(v any) bool {
	b, ok := v.(bool)
	return ok && b
}

// logrus levels to slog's.
var csLogLevels = map[string]string{"trace": "debug", "debug": "debug", "info": "info", "warning": "warn", "warn": "warn", "error": "error", "fatal": "error", "panic": "error"}

func (t *csTranslator) server(path string, s csMap) error {
	const p = "api.server."
	if v, ok := s["enable"]; ok && v != nil && !truthy(v) {
		return fmt.Errorf("--crowdsec-config %s: api.server.enable is false (the file disables the LAPI)", path)
	}
	uri, _ := scalar(s["listen_uri"])
	if uri == "" {
		return fmt.Errorf("--crowdsec-config %s: no api.server.listen_uri (halapi listens on TCP only)", path)
	}
	if _, _, err := net.SplitHostPort(uri); err != nil {
		return fmt.Errorf("--crowdsec-config %s: api.server.listen_uri %q: want host:port", path, uri)
	}
	t.set("listen", p+"listen_uri", uri)

	tlsCfg := s.sub("tls")
	cert, _ := scalar(tlsCfg["cert_file"])
	if cert == "" {
		// CrowdSec serves plain HTTP without a certificate.
		t.set("plain-http", p+"listen_uri (no tls.cert_file: plain http)", "true")
	} else {
		t.set("plain-http", p+"tls.cert_file", "false")
	}
	for _, k := range csMap(tlsCfg).keys() {
		key := p + "tls." + k
		v := tlsCfg[k]
		switch k {
		case "cert_file":
			if cert != "" {
				t.set("tls-cert", key, cert)
			}
		case "key_file":
			if s, _ := scalar(v); s != "" && cert != "" {
				t.set("tls-key", key, s)
			} else if s != "" {
				t.warn("%s: ignored (no tls.cert_file: CrowdSec serves plain http)", key)
			}
		case "ca_cert_path":
			if s, _ := scalar(v); s != "" {
				t.setList("client-ca", key, []string{s})
			}
		case "agents_allowed_ou":
			if l, ok := list(v); ok && len(l) > 0 {
				t.setList("agents-allowed-ou", key, l)
			}
		case "bouncers_allowed_ou":
			if l, ok := list(v); ok && len(l) > 0 {
				t.setList("bouncers-allowed-ou", key, l)
			}
		case "crl_path":
			if s, _ := scalar(v); s != "" {
				t.set("crl", key, s)
			}
		case "client_verification":
			// halapi verifies a client certificate when one is given
			// (CrowdSec's default, VerifyClientCertIfGiven).
			if s, _ := scalar(v); s != "" && s != "VerifyClientCertIfGiven" {
				t.set("client-verification", key, s)
			}
		default:
			if v != nil {
				t.warn("%s: ignored (no halapi equivalent)", key)
			}
		}
	}

	for _, k := range s.keys() {
		key := p + k
		v := s[k]
		switch k {
		case "enable", "listen_uri", "tls", "console_path", "online_client", "auto_registration",
			"use_forwarded_for_headers", "trusted_proxies":
			// handled here or below
		case "log_level":
			if lv, _ := scalar(v); lv != "" {
				if m, ok := csLogLevels[strings.ToLower(lv)]; ok {
					t.set("log-level", key, m)
				} else {
					t.warn("%s %q: ignored (unknown level)", key, lv)
				}
			}
		case "trusted_ips":
			if l, ok := list(v); ok {
				t.setList("trusted-ips", key, l)
			} else {
				t.warn("%s: ignored (not a list)", key)
			}
		case "profiles_path":
			if s, _ := scalar(v); s != "" {
				t.set("profiles", key, s)
			}
		case "disable_remote_lapi_registration":
			t.set("disable-remote-registration", key, strconv.FormatBool(truthy(v)))
		case "disable_usage_metrics_export":
			t.set("capi-disable-usage-metrics", key, strconv.FormatBool(truthy(v)))
		default:
			if v != nil {
				t.warn("%s: ignored (no halapi equivalent)", key)
			}
		}
	}

	// use_forwarded_for_headers / trusted_proxies, as CrowdSec reads them:
	// the header alone trusts every IPv4 peer.
	if tp, ok := s["trusted_proxies"]; ok && tp != nil {
		if l, ok := list(tp); ok {
			t.setList("trusted-proxies", p+"trusted_proxies", l)
		} else {
			t.warn("%strusted_proxies: ignored (not a list)", p)
		}
	} else if truthy(s["use_forwarded_for_headers"]) {
		t.setList("trusted-proxies", p+"use_forwarded_for_headers", []string{"0.0.0.0/0"})
		t.warn("%suse_forwarded_for_headers without trusted_proxies: X-Forwarded-For is trusted from every IPv4 peer, as in CrowdSec (--trusted-proxies 0.0.0.0/0); list your proxies in trusted_proxies", p)
	}

	if ar := s.sub("auto_registration"); ar != nil {
		if truthy(ar["enabled"]) {
			if tok, _ := scalar(ar["token"]); tok != "" {
				t.set("auto-registration-token", p+"auto_registration.token", tok)
			}
			if l, ok := list(ar["allowed_ranges"]); ok {
				t.setList("auto-registration-ranges", p+"auto_registration.allowed_ranges", l)
			}
		}
		for _, k := range csMap(ar).keys() {
			if k != "enabled" && k != "token" && k != "allowed_ranges" {
				t.warn("%sauto_registration.%s: ignored (no halapi equivalent)", p, k)
			}
		}
	}

	t.online(s, s.has("online_client"))
	t.console(s)
	return nil
}

// online maps online_client: without it (or without credentials_path)
// CrowdSec does not talk to the Central API.
func (t *csTranslator) online(s csMap, present bool) {
	const p = "api.server.online_client."
	oc := s.sub("online_client")
	creds, _ := scalar(oc["credentials_path"])
	if !present || creds == "" {
		t.set("capi-disable", "api.server.online_client (absent or no credentials_path: no Central API)", "true")
		return
	}
	t.set("capi-disable", p+"credentials_path", "false")
	t.set("capi-credentials", p+"credentials_path", creds)
	for _, k := range csMap(oc).keys() {
		v := oc[k]
		switch k {
		case "credentials_path":
		case "sharing":
			if v != nil {
				t.set("capi-sharing", p+k, strconv.FormatBool(truthy(v)))
			}
		case "pull":
			pull := csMap(oc).sub("pull")
			for _, pk := range pull.keys() {
				switch pk {
				case "community":
					t.set("capi-pull-community", p+"pull.community", strconv.FormatBool(truthy(pull[pk])))
				case "blocklists":
					t.set("capi-pull-blocklists", p+"pull.blocklists", strconv.FormatBool(truthy(pull[pk])))
				default:
					t.warn("%spull.%s: ignored (no halapi equivalent)", p, pk)
				}
			}
		default:
			if v != nil {
				t.warn("%s%s: ignored (no halapi equivalent)", p, k)
			}
		}
	}
}

// defaultConsolePath is CrowdSec's console_path when unset.
const defaultConsolePath = "/etc/crowdsec/console.yaml"

// console reads console.yaml as CrowdSec does: a missing file means
// custom and tainted shared, manual and context not, no management.
func (t *csTranslator) console(s csMap) {
	path, _ := scalar(s["console_path"])
	key := "api.server.console_path"
	if path == "" {
		path, key = defaultConsolePath, "api.server.console_path (default "+defaultConsolePath+")"
	}
	opts := map[string]bool{"share_custom": true, "share_tainted": true, "share_manual_decisions": false,
		"share_context": false, "console_management": false}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		t.warn("%s: cannot read %s (%v): CrowdSec's console defaults used", key, path, err)
	default:
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.warn("%s: %s does not parse (%v): CrowdSec's console defaults used", key, path, err)
			break
		}
		for k, v := range m {
			if _, known := opts[k]; !known {
				t.warn("%s: %s: %s ignored (no halapi equivalent)", key, path, k)
				continue
			}
			if v != nil {
				opts[k] = truthy(v)
			}
		}
	}
	flags := map[string]string{"share_custom": "console-share-custom", "share_tainted": "console-share-tainted",
		"share_manual_decisions": "console-share-manual-decisions", "share_context": "console-share-context",
		"console_management": "console-management"}
	for k, fl := range flags {
		t.set(fl, key+": "+k, strconv.FormatBool(opts[k]))
	}
}

// flush maps db_config.flush. Without it CrowdSec never flushes; halapi
// holds its state in memory and keeps its retention defaults.
func (t *csTranslator) flush(db csMap) {
	const p = "db_config.flush."
	if !db.has("flush") || db.sub("flush") == nil {
		t.warn("db_config.flush absent: CrowdSec keeps alerts forever, halapi keeps its retention defaults (--flush-max-items 5000, --flush-max-age 7d)")
		return
	}
	f := db.sub("flush")
	if !f.has("max_items") {
		t.warn("%smax_items absent: CrowdSec keeps any number of alerts, halapi keeps --flush-max-items (default 5000)", p)
	}
	if !f.has("max_age") {
		t.warn("%smax_age absent: CrowdSec keeps alerts of any age, halapi keeps --flush-max-age (default 7d)", p)
	}
	durations := map[string]string{"agents_autodelete.cert": "flush-agents-autodelete-cert",
		"agents_autodelete.login_password": "flush-agents-autodelete-password",
		"bouncers_autodelete.cert":         "flush-bouncers-autodelete-cert",
		"bouncers_autodelete.api_key":      "flush-bouncers-autodelete-api-key"}
	for _, k := range f.keys() {
		v := f[k]
		switch k {
		case "max_items":
			if s, ok := scalar(v); ok {
				t.set("flush-max-items", p+k, s)
			}
		case "max_age":
			if s, ok := scalar(v); ok && s != "" && s != "0" {
				t.set("flush-max-age", p+k, s)
			} else if ok {
				t.warn("%smax_age %q: CrowdSec keeps alerts of any age, halapi keeps --flush-max-age (default 7d)", p, s)
			}
		case "metrics_max_age":
			if s, ok := scalar(v); ok && s != "" && s != "0" {
				t.set("flush-metrics-max-age", p+k, s)
			}
		case "agents_autodelete", "bouncers_autodelete":
			sub := f.sub(k)
			for _, sk := range sub.keys() {
				name := k + "." + sk
				s, _ := scalar(sub[sk])
				if fl, ok := durations[name]; ok {
					if s != "" {
						t.set(fl, p+name, s)
					}
					continue
				}
				// CrowdSec itself ignores agents' api_key and bouncers'
				// login_password (it warns too).
				t.warn("%s%s: ignored (CrowdSec ignores it as well)", p, name)
			}
		default:
			if v != nil {
				t.warn("%s%s: ignored (no halapi equivalent)", p, k)
			}
		}
	}
}

// prometheus: CrowdSec serves metrics only with enabled: true, on
// listen_addr:listen_port (127.0.0.1:6060 by default).
func (t *csTranslator) prometheus(pm csMap, present bool) {
	if !present || pm == nil || !truthy(pm["enabled"]) {
		t.set("metrics-listen", "prometheus.enabled (absent or false)", "")
		return
	}
	addr, _ := scalar(pm["listen_addr"])
	if addr == "" {
		addr = "127.0.0.1"
	}
	port, _ := scalar(pm["listen_port"])
	if port == "" || port == "0" {
		port = "6060"
	}
	t.set("metrics-listen", "prometheus.listen_addr/listen_port", net.JoinHostPort(addr, port))
	for _, k := range pm.keys() {
		switch k {
		case "enabled", "listen_addr", "listen_port":
		case "level":
			if lv, _ := scalar(pm[k]); lv != "" && lv != "full" {
				t.warn("prometheus.level %q: ignored (halapi serves every metric)", lv)
			}
		default:
			t.warn("prometheus.%s: ignored (no halapi equivalent)", k)
		}
	}
}

// notifyPaths maps config_paths.notification_dir and plugin_dir to
// --notification-dir and --plugin-dir; it returns the other keys (skipped).
func (t *csTranslator) notifyPaths(m csMap) []string {
	var skipped []string
	for _, k := range m.keys() {
		v, _ := scalar(m[k])
		switch k {
		case "notification_dir":
			t.set("notification-dir", "config_paths.notification_dir", v)
		case "plugin_dir":
			t.set("plugin-dir", "config_paths.plugin_dir", v)
		case "data_dir": // --hub-data-dir (helperflags.go)
		default:
			skipped = append(skipped, "config_paths."+k)
		}
	}
	return skipped
}

// pluginConfig maps plugin_config.user/group to --plugin-user/--plugin-group.
func (t *csTranslator) pluginConfig(m csMap) {
	for _, k := range m.keys() {
		v, _ := scalar(m[k])
		switch k {
		case "user":
			t.set("plugin-user", "plugin_config.user", v)
		case "group":
			t.set("plugin-group", "plugin_config.group", v)
		default:
			t.warn("plugin_config.%s: not used", k)
		}
	}
}
