package profiles

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// HelperConfig configures the expression helpers that need data from outside
// the alert: the CrowdSec CTI API, MaxMind GeoIP databases, hub data files
// and stashes. It is set once at start with Configure, before profiles are
// loaded (Parse and Load keep their signatures and use the configuration in
// force). The zero value is what a LAPI without any of these has: CTI
// disabled, no GeoIP, no data files, no stash; every helper then answers
// like the reference does in that case (an error for CrowdsecCTI, nil for
// GeoIP, empty for File, false for RegexpInFile, "" for GetFromStash).
type HelperConfig struct {
	// CTIKey is the CrowdSec CTI API key (CrowdSec's api.cti.key). Empty:
	// CrowdsecCTI returns the reference's "cti is disabled" error.
	CTIKey string
	// CTIURL is the CTI API base (default DefaultCTIURL); the smoke
	// endpoint is CTIURL + "/smoke/" + ip.
	CTIURL string
	// CTICacheTTL and CTICacheSize bound the answer cache (CrowdSec's
	// api.cti.cache_timeout and cache_size; defaults 10m and 100, the
	// values CrowdSec's config loading gives them).
	CTICacheTTL  time.Duration
	CTICacheSize int
	// CTITimeout bounds one CTI request (default 5s; the reference has none).
	CTITimeout time.Duration

	// DataDir is the hub data directory (CrowdSec's config_paths.data_dir)
	// File and RegexpInFile read from. Empty: no data files.
	DataDir string
	// GeoIPDir holds GeoLite2-City.mmdb and GeoLite2-ASN.mmdb (default
	// DataDir, where the reference looks). Missing databases are logged once
	// and the GeoIP helpers return nil, as in the reference.
	GeoIPDir string
	// MaxDataFileBytes bounds one data file (default 64 MiB); a larger file
	// is refused (logged) and reads as absent.
	MaxDataFileBytes int64

	// Stashes declares the named caches GetFromStash/SetInStash use (the
	// reference declares them in parsers' stash sections). Undeclared
	// names read "" and ignore writes, like the reference.
	Stashes []StashConfig

	// LookupTimeout bounds one LookupHost resolution (default 2s).
	LookupTimeout time.Duration

	// HTTPClient is used for CTI requests (default: a client with
	// CTITimeout). Tests point it at a fake server.
	HTTPClient *http.Client
	// Logger receives the helpers' warnings (default: discarded).
	Logger *slog.Logger
}

// StashConfig is one stash: a bounded LRU map of strings whose entries expire
// after TTL unless SetInStash gives another expiration.
type StashConfig struct {
	Name string
	Size int           // entries, 1..MaxStashSize
	TTL  time.Duration // default expiration of an entry
}

// Bounds of the helper configuration.
const (
	DefaultCTIURL          = "https://cti.api.crowdsec.net/v2"
	DefaultCTICacheTTL     = 10 * time.Minute // CrowdSec's api.cti.cache_timeout default
	DefaultCTICacheSize    = 100              // CrowdSec's api.cti.cache_size default
	MaxCTICacheSize        = 100_000
	DefaultCTITimeout      = 5 * time.Second
	DefaultMaxDataFileSize = 64 << 20
	MaxDataFiles           = 256
	MaxStashes             = 64
	MaxStashSize           = 100_000
	MaxStashValueBytes     = 64 << 10
	DefaultLookupTimeout   = 2 * time.Second
	maxCTIResponseBytes    = 1 << 20
)

// helperState is the configuration in force plus the resources it opened.
type helperState struct {
	cfg    HelperConfig
	logger *slog.Logger
	cti    *ctiClient
	geo    *geoDBs
	files  *dataFiles
	stash  map[string]*stash
}

var current atomic.Pointer[helperState]

func init() {
	st, _ := newHelperState(HelperConfig{})
	current.Store(st)
}

func state() *helperState { return current.Load() }

// Configure validates cfg, opens what it names (GeoIP databases) and makes it
// the configuration the helpers use. It is meant to be called once at start,
// before profiles are loaded; calling it again replaces the configuration
// (stashes and caches start empty) and closes the previous databases.
func Configure(cfg HelperConfig) error {
	st, err := newHelperState(cfg)
	if err != nil {
		return err
	}
	if old := current.Swap(st); old != nil {
		old.close()
	}
	return nil
}

func newHelperState(cfg HelperConfig) (*helperState, error) {
	if cfg.CTIURL == "" {
		cfg.CTIURL = DefaultCTIURL
	}
	if cfg.CTICacheTTL == 0 {
		cfg.CTICacheTTL = DefaultCTICacheTTL
	}
	if cfg.CTICacheSize == 0 {
		cfg.CTICacheSize = DefaultCTICacheSize
	}
	if cfg.CTITimeout == 0 {
		cfg.CTITimeout = DefaultCTITimeout
	}
	if cfg.MaxDataFileBytes == 0 {
		cfg.MaxDataFileBytes = DefaultMaxDataFileSize
	}
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.GeoIPDir == "" {
		cfg.GeoIPDir = cfg.DataDir
	}
	switch {
	case cfg.CTICacheTTL < 0:
		return nil, errors.New("CTI cache TTL must be > 0")
	case cfg.CTICacheSize < 0 || cfg.CTICacheSize > MaxCTICacheSize:
		return nil, fmt.Errorf("CTI cache size must be 1..%d", MaxCTICacheSize)
	case cfg.CTITimeout < 0:
		return nil, errors.New("CTI timeout must be > 0")
	case cfg.MaxDataFileBytes < 0:
		return nil, errors.New("data file size bound must be > 0")
	case cfg.LookupTimeout < 0:
		return nil, errors.New("LookupHost timeout must be > 0")
	case !validHTTPURL(cfg.CTIURL):
		return nil, fmt.Errorf("CTI URL %q: want an http or https URL", cfg.CTIURL)
	case len(cfg.Stashes) > MaxStashes:
		return nil, fmt.Errorf("at most %d stashes", MaxStashes)
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	st := &helperState{cfg: cfg, logger: logger, stash: map[string]*stash{}}
	for _, sc := range cfg.Stashes {
		if sc.Name == "" {
			return nil, errors.New("stash without a name")
		}
		if sc.Size < 1 || sc.Size > MaxStashSize {
			return nil, fmt.Errorf("stash %q: size must be 1..%d", sc.Name, MaxStashSize)
		}
		if _, dup := st.stash[sc.Name]; dup {
			// the reference keeps the first cache of a name for lookups
			continue
		}
		st.stash[sc.Name] = newStash(sc.Size, sc.TTL)
	}
	st.cti = newCTIClient(cfg, logger)
	st.files = newDataFiles(cfg.DataDir, cfg.MaxDataFileBytes, logger)
	st.geo = openGeoDBs(cfg.GeoIPDir, logger)
	if cfg.Logger != nil {
		logger.Info("profile expression helpers", "cti", cfg.CTIKey != "", "hub_data_dir", cfg.DataDir,
			"geoip_city", st.geo.city != nil, "geoip_asn", st.geo.asn != nil, "stashes", len(st.stash))
	}
	return st, nil
}

func validHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func (st *helperState) close() {
	if st.geo != nil {
		st.geo.close()
	}
}
