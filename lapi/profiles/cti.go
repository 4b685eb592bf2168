package profiles

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// CTI errors, with the reference's messages (an expression that fails on one
// of them fails the same way in both).
var (
	ErrCTIUnauthorized = errors.New("unauthorized")
	ErrCTILimit        = errors.New("request quota exceeded, please reduce your request rate")
	ErrCTIDisabled     = errors.New("cti is disabled")
	ErrCTIUnknown      = errors.New("unknown error")
)

// ctiBackoff is how long CTI calls are refused after a 429, as in the
// reference.
const ctiBackoff = 5 * time.Minute

// CTIItem is the CTI smoke answer for one IP. Its field and method names are
// those of the reference's SmokeItem, so that expressions written for
// CrowdSec (CrowdsecCTI(ip).GetMaliciousnessScore() > 0.5, .Reputation ==
// "malicious", ...) work unchanged.
type CTIItem struct {
	IpRangeScore         int                 `json:"ip_range_score"`
	Ip                   string              `json:"ip"`
	Reputation           string              `json:"reputation"`
	BackgroundNoise      string              `json:"background_noise"`
	Confidence           string              `json:"confidence"`
	IpRange              *string             `json:"ip_range"`
	AsName               *string             `json:"as_name"`
	AsNum                *int                `json:"as_num"`
	Location             CTILocation         `json:"location"`
	ReverseDNS           *string             `json:"reverse_dns"`
	Behaviors            []*CTINamed         `json:"behaviors"`
	History              CTIHistory          `json:"history"`
	Classifications      CTIClassifications  `json:"classifications"`
	AttackDetails        []*CTIAttackDetails `json:"attack_details"`
	TargetCountries      map[string]int      `json:"target_countries"`
	BackgroundNoiseScore *int                `json:"background_noise_score"`
	Scores               CTIScores           `json:"scores"`
	References           []CTINamed          `json:"references"`
	CVEs                 []string            `json:"cves"`
	IsOk                 bool                `json:"-"`
}

// CTINamed is a behavior, classification or reference.
type CTINamed struct {
	Name        string `json:"name"`
	Label       string `json:"label"`
	Description string `json:"description"`
}

// CTIAttackDetails is one attack seen from the IP.
type CTIAttackDetails struct {
	Name        string   `json:"name"`
	Label       string   `json:"label"`
	Description string   `json:"description"`
	References  []string `json:"references"`
}

// CTIClassifications are the IP's classifications and false-positive tags.
type CTIClassifications struct {
	FalsePositives  []CTINamed `json:"false_positives"`
	Classifications []CTINamed `json:"classifications"`
}

// CTIHistory is when the IP was seen.
type CTIHistory struct {
	FirstSeen *string `json:"first_seen"`
	LastSeen  *string `json:"last_seen"`
	FullAge   int     `json:"full_age"`
	DaysAge   int     `json:"days_age"`
}

// CTILocation is the IP's location.
type CTILocation struct {
	Country   *string  `json:"country"`
	City      *string  `json:"city"`
	Latitude  *float64 `json:"latitude"`
	Longitude *float64 `json:"longitude"`
}

// CTIScores are the IP's scores over several periods.
type CTIScores struct {
	Overall   CTIScore `json:"overall"`
	LastDay   CTIScore `json:"last_day"`
	LastWeek  CTIScore `json:"last_week"`
	LastMonth CTIScore `json:"last_month"`
}

// CTIScore is one period's scores.
type CTIScore struct {
	Aggressiveness int `json:"aggressiveness"`
	Threat         int `json:"threat"`
	Trust          int `json:"trust"`
	Anomaly        int `json:"anomaly"`
	Total          int `json:"total"`
}

func namesOf(items []CTINamed) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.Name)
	}
	return out
}

// GetAttackDetails names the attacks seen.
func (c *CTIItem) GetAttackDetails() []string {
	out := make([]string, 0, len(c.AttackDetails))
	for _, a := range c.AttackDetails {
		out = append(out, a.Name)
	}
	return out
}

// GetBehaviors names the behaviors seen.
func (c *CTIItem) GetBehaviors() []string {
	out := make([]string, 0, len(c.Behaviors))
	for _, b := range c.Behaviors {
		out = append(out, b.Name)
	}
	return out
}

// GetMaliciousnessScore is 1 for an IP of the community blocklist, else the
// last day's total score / 10.
func (c *CTIItem) GetMaliciousnessScore() float32 {
	if c.IsPartOfCommunityBlocklist() {
		return 1
	}
	if t := c.Scores.LastDay.Total; t > 0 {
		return float32(t) / 10
	}
	return 0
}

// IsPartOfCommunityBlocklist tells whether the IP is classified
// community-blocklist.
func (c *CTIItem) IsPartOfCommunityBlocklist() bool {
	for _, v := range c.Classifications.Classifications {
		if v.Name == "community-blocklist" {
			return true
		}
	}
	return false
}

// GetBackgroundNoiseScore is the background noise score, 0 when absent.
func (c *CTIItem) GetBackgroundNoiseScore() int {
	if c.BackgroundNoiseScore == nil {
		return 0
	}
	return *c.BackgroundNoiseScore
}

// GetFalsePositives names the false-positive tags.
func (c *CTIItem) GetFalsePositives() []string { return namesOf(c.Classifications.FalsePositives) }

// GetClassifications names the classifications.
func (c *CTIItem) GetClassifications() []string { return namesOf(c.Classifications.Classifications) }

// IsFalsePositive tells whether the IP has a false-positive tag.
func (c *CTIItem) IsFalsePositive() bool { return len(c.Classifications.FalsePositives) > 0 }

// ctiClient queries the CTI smoke endpoint through a bounded LRU cache with
// the reference's behaviour: a 403 disables CTI until the next Configure, a
// 429 refuses calls for five minutes, a 404 is an empty (cached) item.
type ctiClient struct {
	key, base string
	http      *http.Client
	logger    *slog.Logger
	cache     *lru[*CTIItem]
	ttl       time.Duration

	inflight singleflight.Group

	mu           sync.Mutex
	enabled      bool
	backoffUntil time.Time
	now          func() time.Time
}

func newCTIClient(cfg HelperConfig, logger *slog.Logger) *ctiClient {
	c := &ctiClient{
		key:     cfg.CTIKey,
		base:    strings.TrimRight(cfg.CTIURL, "/"),
		http:    cfg.HTTPClient,
		logger:  logger,
		cache:   newLRU[*CTIItem](cfg.CTICacheSize),
		ttl:     cfg.CTICacheTTL,
		enabled: cfg.CTIKey != "",
		now:     time.Now,
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: cfg.CTITimeout}
	}
	return c
}

func (c *ctiClient) lookup(ip string) (*CTIItem, error) {
	c.mu.Lock()
	if !c.enabled {
		c.mu.Unlock()
		return &CTIItem{}, ErrCTIDisabled
	}
	now := c.now()
	if it, ok := c.cache.get(ip, now); ok {
		c.mu.Unlock()
		return it, nil
	}
	if now.Before(c.backoffUntil) {
		c.mu.Unlock()
		return &CTIItem{}, ErrCTILimit
	}
	c.mu.Unlock()

	// Concurrent misses for one IP (several agents reporting it at once)
	// share one request: CTI keys have small daily quotas.
	v, err, _ := c.inflight.Do(ip, func() (any, error) { return c.fetchAndCache(ip) })
	return v.(*CTIItem), err
}

func (c *ctiClient) fetchAndCache(ip string) (*CTIItem, error) {
	it, err := c.fetch(ip)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case errors.Is(err, ErrCTIUnauthorized):
		c.enabled = false
		c.logger.Error("CTI: invalid API key, CTI disabled")
		return &CTIItem{}, ErrCTIUnauthorized
	case errors.Is(err, ErrCTILimit):
		c.backoffUntil = c.now().Add(ctiBackoff)
		c.logger.Error("CTI: quota exceeded, calls refused for a while", "backoff", ctiBackoff)
		return &CTIItem{}, ErrCTILimit
	case err != nil:
		c.logger.Warn("CTI request failed", "error", err)
		return &CTIItem{}, fmt.Errorf("unexpected error: %w", err)
	}
	c.cache.put(ip, it, c.now().Add(c.ttl))
	return it, nil
}

func (c *ctiClient) fetch(ip string) (*CTIItem, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.httpTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/smoke/"+url.PathEscape(ip), http.NoBody)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Api-Key", c.key)
	req.Header.Set("User-Agent", "halapi")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusForbidden:
		return nil, ErrCTIUnauthorized
	case http.StatusTooManyRequests:
		return nil, ErrCTILimit
	case http.StatusNotFound:
		return &CTIItem{}, nil
	default:
		return nil, fmt.Errorf("unexpected http code : %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCTIResponseBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxCTIResponseBytes {
		return nil, fmt.Errorf("CTI answer larger than %d bytes", maxCTIResponseBytes)
	}
	var it CTIItem
	if err := json.Unmarshal(body, &it); err != nil {
		return nil, err
	}
	return &it, nil
}

func (c *ctiClient) httpTimeout() time.Duration {
	if c.http.Timeout > 0 {
		return c.http.Timeout
	}
	return DefaultCTITimeout
}

// lru is a size-bounded map with per-entry expiry, least recently used
// evicted first. Not safe for concurrent use.
type lru[V any] struct {
	max   int
	order *list.List // front: most recent
	items map[string]*list.Element
}

type lruEntry[V any] struct {
	key     string
	val     V
	expires time.Time
}

func newLRU[V any](max int) *lru[V] {
	return &lru[V]{max: max, order: list.New(), items: map[string]*list.Element{}}
}

func (l *lru[V]) get(key string, now time.Time) (V, bool) {
	var zero V
	el, ok := l.items[key]
	if !ok {
		return zero, false
	}
	e := el.Value.(*lruEntry[V])
	if !now.Before(e.expires) {
		l.order.Remove(el)
		delete(l.items, key)
		return zero, false
	}
	l.order.MoveToFront(el)
	return e.val, true
}

func (l *lru[V]) put(key string, v V, expires time.Time) {
	if el, ok := l.items[key]; ok {
		e := el.Value.(*lruEntry[V])
		e.val, e.expires = v, expires
		l.order.MoveToFront(el)
		return
	}
	l.items[key] = l.order.PushFront(&lruEntry[V]{key: key, val: v, expires: expires})
	for l.order.Len() > l.max {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.items, old.Value.(*lruEntry[V]).key)
	}
}

func (l *lru[V]) len() int { return l.order.Len() }

// CTILookup is the CrowdsecCTI helper outside expressions (the
// notification templates' CrowdsecCTI): the same client, cache and bounds.
func CTILookup(ip string) (*CTIItem, error) { return state().cti.lookup(ip) }
