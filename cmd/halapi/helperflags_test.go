package main

import (
	"strings"
	"testing"
	"time"
)

// api.cti and config_paths.data_dir of a CrowdSec config.yaml map to the
// helper flags; the key never shows in a warning.
func TestCrowdsecConfigHelperSettings(t *testing.T) {
	base := "api:\n  server:\n    listen_uri: 127.0.0.1:8080\n"
	dir := t.TempDir()
	cfg := writeFile(t, dir, "config.yaml", base+"  cti:\n    key: secret-cti-key\n    cache_timeout: 30m\n    cache_size: 50\n    log_level: debug\nconfig_paths:\n  data_dir: /data/\n")
	f, _, warn, err := resolve(t, "--crowdsec-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := f.helpers
	if h.ctiKey != "secret-cti-key" || h.ctiCacheTTL != 30*time.Minute || h.ctiCacheSize != 50 || h.hubDataDir != "/data/" {
		t.Errorf("helpers = %+v", h)
	}
	if strings.Contains(warn, "secret-cti-key") || !strings.Contains(warn, "api.cti.log_level: ignored") {
		t.Errorf("warnings:\n%s", warn)
	}

	// enabled: false, or no key: CTI off.
	for _, y := range []string{"  cti:\n    key: k\n    enabled: false\n", "  cti:\n    cache_size: 5\n"} {
		f, _, _, err := resolve(t, "--crowdsec-config", writeFile(t, t.TempDir(), "config.yaml", base+y))
		if err != nil || f.helpers.ctiKey != "" {
			t.Errorf("%q: key %q, %v", y, f.helpers.ctiKey, err)
		}
	}
	// An empty key is refused, as by CrowdSec.
	if _, _, _, err := resolve(t, "--crowdsec-config", writeFile(t, t.TempDir(), "config.yaml", base+"  cti:\n    key: \"\"\n")); err == nil || !strings.Contains(err.Error(), "api.cti.key is empty") {
		t.Errorf("empty key: %v", err)
	}
}

func TestStashFlag(t *testing.T) {
	sc, err := parseStash("seen:1000:1h")
	if err != nil || sc.Name != "seen" || sc.Size != 1000 || sc.TTL != time.Hour {
		t.Errorf("%+v %v", sc, err)
	}
	for _, bad := range []string{"", "a", "a:1", ":1:1h", "a:0:1h", "a:x:1h", "a:1:0s", "a:1:forever", "a:1000000000:1h"} {
		if _, err := parseStash(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	f := helperFlags{ctiCacheTTL: time.Minute, ctiCacheSize: 1, stashes: []string{"s:1:bad"}}
	if err := f.configure(nil); err == nil || !strings.Contains(err.Error(), `--stash "s:1:bad"`) {
		t.Errorf("bad --stash: %v", err)
	}
}
