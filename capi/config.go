package capi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/halapi/halapi/fsm"
	"gopkg.in/yaml.v3"
)

// DefaultURL is CrowdSec's Central API.
const DefaultURL = "https://api.crowdsec.net/"

// DefaultPapiURL is applied when a credentials file has no papi_url.
const DefaultPapiURL = "https://papi.api.crowdsec.net/"

// Credentials are the CAPI machine credentials (online_api_credentials.yaml).
type Credentials struct {
	URL      string `json:"url" yaml:"url"`
	Login    string `json:"login" yaml:"login"`
	Password string `json:"password" yaml:"password"`
	PapiURL  string `json:"papi_url,omitempty" yaml:"papi_url,omitempty"`
}

// credsFile is the strict shape of online_api_credentials.yaml; the TLS
// keys are accepted (shared struct in the reference) but unused.
type credsFile struct {
	URL        string `yaml:"url"`
	Login      string `yaml:"login"`
	Password   string `yaml:"password"`
	PapiURL    string `yaml:"papi_url"`
	CACertPath string `yaml:"ca_cert_path"`
	KeyPath    string `yaml:"key_path"`
	CertPath   string `yaml:"cert_path"`
}

// ParseCredentials parses an online_api_credentials.yaml document. Unknown
// keys are an error; url, login and password are required; papi_url
// defaults to DefaultPapiURL.
func ParseCredentials(data []byte) (Credentials, error) {
	var f credsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return Credentials{}, fmt.Errorf("online api credentials: %w", err)
	}
	c := Credentials{URL: strings.TrimSpace(f.URL), Login: strings.TrimSpace(f.Login), Password: f.Password,
		PapiURL: strings.TrimSpace(f.PapiURL)}
	var missing []string
	if c.URL == "" {
		missing = append(missing, "url")
	}
	if c.Login == "" {
		missing = append(missing, "login")
	}
	if c.Password == "" {
		missing = append(missing, "password")
	}
	if len(missing) > 0 {
		return Credentials{}, fmt.Errorf("online api credentials: missing %s", strings.Join(missing, ", "))
	}
	if c.PapiURL == "" {
		c.PapiURL = DefaultPapiURL
	}
	if err := checkBaseURL(c.URL); err != nil {
		return Credentials{}, err
	}
	return c, nil
}

// LoadCredentials reads an online_api_credentials.yaml file.
func LoadCredentials(path string) (Credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Credentials{}, err
	}
	c, err := ParseCredentials(b)
	if err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// MarshalCredentials writes the file cscli capi register writes (url,
// login, password).
func MarshalCredentials(c Credentials) []byte {
	b, _ := yaml.Marshal(map[string]string{"url": c.URL, "login": c.Login, "password": c.Password})
	return b
}

func checkBaseURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("invalid CAPI url %q", s)
	}
	if !strings.HasSuffix(u.Path, "/") {
		return fmt.Errorf("CAPI url %q must end with '/'", s)
	}
	return nil
}

// ConsoleOptions are CrowdSec's console.yaml options (defaults: custom and
// tainted shared, manual decisions and context not shared).
type ConsoleOptions struct {
	ShareManualDecisions bool `json:"share_manual_decisions"`
	ShareCustom          bool `json:"share_custom"`
	ShareTainted         bool `json:"share_tainted"`
	ShareContext         bool `json:"share_context"`
	ConsoleManagement    bool `json:"console_management"`
}

// DefaultConsoleOptions returns CrowdSec's defaults (also used when
// console.yaml is missing).
func DefaultConsoleOptions() ConsoleOptions {
	return ConsoleOptions{ShareCustom: true, ShareTainted: true}
}

// Enabled lists the enabled options in the order usage metrics report
// them: custom, tainted, manual, console_management, context.
func (o ConsoleOptions) Enabled() []string {
	var out []string
	if o.ShareCustom {
		out = append(out, "custom")
	}
	if o.ShareTainted {
		out = append(out, "tainted")
	}
	if o.ShareManualDecisions {
		out = append(out, "manual")
	}
	if o.ConsoleManagement {
		out = append(out, "console_management")
	}
	if o.ShareContext {
		out = append(out, "context")
	}
	return out
}

// ClusterInfo tells the status who this node is and who leads.
type ClusterInfo func(ctx context.Context) (self, leader, leaderAPI string)

// Config configures the CAPI service. Start from DefaultConfig(): zero
// durations and sizes are replaced by the defaults, booleans are taken as
// they are.
type Config struct {
	// Disabled turns every CAPI activity off (status says so).
	Disabled bool
	// URL is the CAPI base URL (trailing '/') used to register, and used
	// instead of the stored credentials' URL when OverrideURL is set.
	URL         string
	OverrideURL bool
	// Credentials, if set, are imported into the replicated state on
	// leadership when they differ from the stored ones.
	Credentials *Credentials
	// Register makes the leader register with CAPI when no credentials
	// are stored.
	Register bool
	// UserAgent of every CAPI request (the reference sends
	// crowdsec/<version>-<platform>); Header is added to every request.
	UserAgent string
	Header    http.Header
	// Version is the LAPI version reported in metrics.
	Version string

	// Sharing pushes signals; PullCommunity and PullBlocklists select what
	// the stream returns (api.server.online_client).
	Sharing        bool
	PullCommunity  bool
	PullBlocklists bool
	Console        ConsoleOptions

	// Schedules. The first push, metrics and usage-metrics runs are at a
	// random point in interval ± jitter (jitter 0: exactly the interval);
	// the first pull and the first metrics send are immediate.
	PushInterval         time.Duration
	PushJitter           time.Duration
	PullInterval         time.Duration
	PullJitter           time.Duration
	MetricsInterval      time.Duration
	MetricsJitter        time.Duration
	MetricsCheckInterval time.Duration // machine-set change check
	UsageMetricsInterval time.Duration
	UsageMetricsJitter   time.Duration
	DisableUsageMetrics  bool
	// PullGuard skips a pull when community decisions were stored less
	// than this ago (1h30 in the reference; negative: never skip).
	PullGuard time.Duration
	// ScenarioPoll is how often the pull loop checks that a machine has
	// scenarios before the first pull.
	ScenarioPoll time.Duration
	// WatchInterval is how often the leader checks the replicated state
	// for registration requests and credential changes.
	WatchInterval time.Duration

	// ChunkSize is the number of pulled decisions per raft command
	// (~250 bytes each in the entry: 5,000 make ~1.2 MiB, far below the
	// 16 MiB entry bound). Readers never wait for an apply (they read
	// the FSM's published state), so it only trades raft round trips
	// against entry size; importChunks keeps several chunks in flight.
	ChunkSize int
	// ListChunkSize is the number of values per compact list entry
	// (fsm.ImportList, ~17 bytes each: 50,000 make ~850 KiB), used when
	// every voter applies it.
	ListChunkSize int
	// SignalBatch is the number of signals per POST (CAPI accepts 50).
	SignalBatch int
	// SignalTimeout bounds one signal batch (retries included).
	SignalTimeout time.Duration
	// RequestTimeout bounds one call (retries included) other than signals
	// and downloads; DownloadTimeout bounds stream and list downloads.
	RequestTimeout  time.Duration
	DownloadTimeout time.Duration
	// Retries: up to MaxTries attempts on 429/5xx/network errors, sleeping
	// RetryBase·2^n (capped by RetryMax) with ±50% jitter; the same
	// backoff paces loop-level retries of failed pulls and logins.
	MaxTries  int
	RetryBase time.Duration
	RetryMax  time.Duration

	// HTTPClient is used for every call (default: a client with sane
	// transport timeouts).
	HTTPClient *http.Client
	// Cluster names this node and the leader in the status.
	Cluster ClusterInfo
	// Now is the clock (tests).
	Now func() time.Time
}

// DefaultConfig returns CrowdSec v1.7.6's behaviour.
func DefaultConfig() Config {
	return Config{
		URL:                  DefaultURL,
		UserAgent:            "crowdsec/v1.7.6-halapi",
		Version:              "v1.7.6",
		Sharing:              true,
		PullCommunity:        true,
		PullBlocklists:       true,
		Console:              DefaultConsoleOptions(),
		PushInterval:         10 * time.Second,
		PushJitter:           7 * time.Second,
		PullInterval:         2 * time.Hour,
		PullJitter:           5 * time.Minute,
		MetricsInterval:      30 * time.Minute,
		MetricsJitter:        15 * time.Minute,
		MetricsCheckInterval: 20 * time.Second,
		UsageMetricsInterval: 30 * time.Minute,
		UsageMetricsJitter:   15 * time.Minute,
		PullGuard:            90 * time.Minute,
		ScenarioPoll:         time.Second,
		WatchInterval:        time.Second,
		ChunkSize:            5000,
		ListChunkSize:        50000,
		SignalBatch:          50,
		SignalTimeout:        5 * time.Second,
		RequestTimeout:       30 * time.Second,
		DownloadTimeout:      5 * time.Minute,
		MaxTries:             5,
		RetryBase:            5 * time.Second,
		RetryMax:             5 * time.Minute,
	}
}

func (c *Config) fill() {
	d := DefaultConfig()
	if c.URL == "" {
		c.URL = d.URL
	}
	if c.UserAgent == "" {
		c.UserAgent = d.UserAgent
	}
	if c.Version == "" {
		c.Version = d.Version
	}
	dur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	dur(&c.PushInterval, d.PushInterval)
	dur(&c.PullInterval, d.PullInterval)
	dur(&c.MetricsInterval, d.MetricsInterval)
	dur(&c.MetricsCheckInterval, d.MetricsCheckInterval)
	dur(&c.UsageMetricsInterval, d.UsageMetricsInterval)
	dur(&c.ScenarioPoll, d.ScenarioPoll)
	dur(&c.WatchInterval, d.WatchInterval)
	dur(&c.SignalTimeout, d.SignalTimeout)
	dur(&c.RequestTimeout, d.RequestTimeout)
	dur(&c.DownloadTimeout, d.DownloadTimeout)
	dur(&c.RetryBase, d.RetryBase)
	dur(&c.RetryMax, d.RetryMax)
	if c.PullGuard == 0 {
		c.PullGuard = d.PullGuard
	}
	if c.ListChunkSize <= 0 {
		c.ListChunkSize = d.ListChunkSize
	}
	c.ListChunkSize = min(c.ListChunkSize, fsm.MaxDecisionsPerEntry)
	if c.ChunkSize <= 0 {
		c.ChunkSize = d.ChunkSize
	}
	if c.SignalBatch <= 0 || c.SignalBatch > 50 {
		c.SignalBatch = d.SignalBatch
	}
	if c.MaxTries <= 0 {
		c.MaxTries = d.MaxTries
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   4,
			ForceAttemptHTTP2:     true,
		}}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Disabled {
		return nil
	}
	if c.URL != "" {
		if err := checkBaseURL(c.URL); err != nil {
			return err
		}
	}
	if c.Credentials != nil {
		if c.Credentials.Login == "" || c.Credentials.Password == "" || c.Credentials.URL == "" {
			return errors.New("CAPI credentials need url, login and password")
		}
	}
	return nil
}
