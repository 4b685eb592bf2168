package main

import (
	"fmt"
	"github.com/halapi/halapi/notify"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/halapi/halapi/lapi/models"
	"github.com/halapi/halapi/lapi/profiles"
)

// helperFlags configure the profile expression helpers that need outside
// data (profiles.HelperConfig): CTI, GeoIP databases, hub data files,
// stashes.
type helperFlags struct {
	ctiKey, ctiURL       string
	ctiCacheTTL          time.Duration
	ctiCacheSize         int
	hubDataDir, geoipDir string
	stashes              []string
}

func bindHelperFlags(fl *pflag.FlagSet, f *helperFlags) {
	fl.StringVar(&f.ctiKey, "cti-key", "", "CrowdSec CTI API key for the CrowdsecCTI profile helper (CrowdSec's api.cti.key); empty: CTI disabled")
	fl.StringVar(&f.ctiURL, "cti-url", profiles.DefaultCTIURL, "CTI API base URL")
	fl.DurationVar(&f.ctiCacheTTL, "cti-cache-ttl", profiles.DefaultCTICacheTTL, "how long a CTI answer is cached (api.cti.cache_timeout)")
	fl.IntVar(&f.ctiCacheSize, "cti-cache-size", profiles.DefaultCTICacheSize, fmt.Sprintf("CTI answers cached at most (api.cti.cache_size, at most %d)", profiles.MaxCTICacheSize))
	fl.StringVar(&f.hubDataDir, "hub-data-dir", "", "hub data directory File/RegexpInFile read and where GeoLite2-City.mmdb/GeoLite2-ASN.mmdb are looked for (CrowdSec's config_paths.data_dir)")
	fl.StringVar(&f.geoipDir, "geoip-dir", "", "directory of the GeoLite2 databases if not --hub-data-dir")
	fl.StringArrayVar(&f.stashes, "stash", nil, "declare a stash for GetFromStash/SetInStash as NAME:SIZE:TTL, e.g. seen:1000:1h (repeatable)")
}

// configure installs the helper configuration; it must run before profiles
// are loaded. The CTI key is never logged.
func (f *helperFlags) configure(logger *slog.Logger) error {
	cfg := profiles.HelperConfig{
		CTIKey: f.ctiKey, CTIURL: f.ctiURL, CTICacheTTL: f.ctiCacheTTL, CTICacheSize: f.ctiCacheSize,
		DataDir: f.hubDataDir, GeoIPDir: f.geoipDir, Logger: logger,
	}
	if f.ctiCacheTTL <= 0 || f.ctiCacheSize <= 0 {
		return fmt.Errorf("--cti-cache-ttl and --cti-cache-size must be > 0")
	}
	for _, s := range f.stashes {
		sc, err := parseStash(s)
		if err != nil {
			return fmt.Errorf("--stash %q: %w", s, err)
		}
		cfg.Stashes = append(cfg.Stashes, sc)
	}
	if err := profiles.Configure(cfg); err != nil {
		return fmt.Errorf("profile helpers: %w", err)
	}
	// The notification templates' CrowdsecCTI: the same client and cache
	// (nil when CTI is off or the lookup fails, as the reference's).
	notify.CTIFunc = func(ip string) any {
		if it, err := profiles.CTILookup(ip); err == nil && it != nil {
			return it
		}
		return nil
	}
	return nil
}

func parseStash(s string) (profiles.StashConfig, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 || parts[0] == "" {
		return profiles.StashConfig{}, fmt.Errorf("want NAME:SIZE:TTL")
	}
	size, err := strconv.Atoi(parts[1])
	if err != nil || size < 1 || size > profiles.MaxStashSize {
		return profiles.StashConfig{}, fmt.Errorf("size must be 1..%d", profiles.MaxStashSize)
	}
	ttl, err := models.ParseDuration(parts[2])
	if err != nil || ttl <= 0 {
		return profiles.StashConfig{}, fmt.Errorf("invalid TTL %q", parts[2])
	}
	return profiles.StashConfig{Name: parts[0], Size: size, TTL: ttl}, nil
}

// helpers maps the settings of the profile expression helpers:
// config_paths.data_dir (hub data files, GeoIP databases) and api.cti
// (key, cache_timeout, cache_size, enabled). As in CrowdSec, an api.cti
// section with an empty key is an error, and CTI is on when a key is set
// unless enabled is false. The key is never put in a warning.
func (t *csTranslator) helpers(path string, doc csMap) error {
	if dd, ok := scalar(doc.sub("config_paths")["data_dir"]); ok && dd != "" {
		t.set("hub-data-dir", "config_paths.data_dir", dd)
	}
	if !doc.sub("api").has("cti") {
		return nil
	}
	cti := doc.sub("api").sub("cti")
	const p = "api.cti."
	key, hasKey := scalar(cti["key"])
	if cti["key"] != nil && key == "" {
		return fmt.Errorf("--crowdsec-config %s: %skey is empty", path, p)
	}
	if !hasKey || (cti["enabled"] != nil && !truthy(cti["enabled"])) {
		return nil
	}
	t.set("cti-key", p+"key", key)
	if v, ok := scalar(cti["cache_timeout"]); ok {
		t.set("cti-cache-ttl", p+"cache_timeout", v)
	}
	if v, ok := scalar(cti["cache_size"]); ok {
		t.set("cti-cache-size", p+"cache_size", v)
	}
	for _, k := range cti.keys() {
		switch k {
		case "key", "cache_timeout", "cache_size", "enabled":
		default:
			t.warn("%s%s: ignored (no halapi equivalent)", p, k)
		}
	}
	return nil
}
