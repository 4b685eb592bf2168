package capi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// gzipMinSize: request bodies larger than this are gzip-compressed.
const gzipMinSize = 5 * 1024

// tokenMargin: a token expiring sooner than this is renewed first.
const tokenMargin = time.Minute

// authRetries is how many times a 401/403 leads to a new login and a retry.
const authRetries = 2

// Endpoint labels (metrics, logs).
const (
	epRegister     = "register"
	epLogin        = "login"
	epStream       = "stream"
	epSignals      = "signals"
	epMetrics      = "metrics"
	epUsageMetrics = "usage_metrics"
	epBlocklist    = "blocklist"
	epAllowlist    = "allowlist"
)

// APIError is a non-2xx answer from CAPI.
type APIError struct {
	Method   string
	Endpoint string
	Status   int
	// Message and Errors come from a {"message","errors"} body; Body holds
	// the raw body when it was not in that shape.
	Message string
	Errors  string
	Body    string
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CAPI %s %s: http %d", e.Method, e.Endpoint, e.Status)
	switch {
	case e.Message != "" || e.Errors != "":
		if e.Message != "" {
			b.WriteString(": " + e.Message)
		}
		if e.Errors != "" {
			b.WriteString(" (" + e.Errors + ")")
		}
	case e.Body != "":
		b.WriteString(": " + e.Body)
	default:
		b.WriteString(", empty body")
	}
	return b.String()
}

// StatusOf returns the HTTP status of an *APIError in err's chain (0 if none).
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

func newAPIError(method, endpoint string, status int, body []byte) *APIError {
	e := &APIError{Method: method, Endpoint: endpoint, Status: status}
	var m struct {
		Message *string `json:"message"`
		Errors  any     `json:"errors"`
	}
	if len(body) > 0 && json.Unmarshal(body, &m) == nil && (m.Message != nil || m.Errors != nil) {
		if m.Message != nil {
			e.Message = *m.Message
		}
		switch v := m.Errors.(type) {
		case nil:
		case string:
			e.Errors = v
		default:
			b, _ := json.Marshal(v)
			e.Errors = string(b)
		}
		return e
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 512 {
		s = s[:512] + "..."
	}
	e.Body = s
	return e
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// Temporary reports whether err is worth retrying later (network error,
// timeout, 429, 5xx) rather than a refusal of what was sent.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	if s := StatusOf(err); s != 0 {
		return retryableStatus(s) || s == http.StatusUnauthorized || s == http.StatusForbidden
	}
	return !errors.Is(err, context.Canceled)
}

// TokenInfo is what the client reads (without verifying the signature)
// from a CAPI JWT.
type TokenInfo struct {
	Expires          time.Time `json:"expires"`
	OrganizationID   string    `json:"organization_id,omitempty"`
	SubscriptionType string    `json:"subscription_type,omitempty"`
}

// ParseToken reads the claims of a JWT without checking its signature.
func ParseToken(tok string) (TokenInfo, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return TokenInfo{}, errors.New("token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return TokenInfo{}, fmt.Errorf("token payload: %w", err)
	}
	var c struct {
		Exp              json.Number `json:"exp"`
		OrganizationID   any         `json:"organization_id"`
		SubscriptionType string      `json:"subscription_type"`
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if err := dec.Decode(&c); err != nil {
		return TokenInfo{}, fmt.Errorf("token claims: %w", err)
	}
	exp, err := c.Exp.Float64()
	if err != nil || exp <= 0 {
		return TokenInfo{}, errors.New("token has no numeric exp claim")
	}
	ti := TokenInfo{Expires: time.Unix(int64(exp), 0), SubscriptionType: c.SubscriptionType}
	if c.OrganizationID != nil {
		ti.OrganizationID = fmt.Sprint(c.OrganizationID)
	}
	return ti, nil
}

// Client talks to CAPI with one set of credentials.
type Client struct {
	cfg   *Config
	base  *url.URL
	creds Credentials

	// Scenarios returns the scenarios sent at login.
	Scenarios func() []string
	// OnToken is called after each successful login (the service stores
	// the token in the replicated state).
	OnToken func(token string)
	// Observe is called after each HTTP exchange (metrics).
	Observe func(endpoint, result string)

	mu    sync.Mutex
	token string
	info  TokenInfo

	loginMu      sync.Mutex
	loginFails   int
	loginBlocked time.Time
	loginErr     error
}

// NewClient returns a client for creds (creds.URL is the base URL).
func NewClient(cfg *Config, creds Credentials) (*Client, error) {
	if cfg.HTTPClient == nil || cfg.Now == nil {
		c := *cfg
		c.fill()
		cfg = &c
	}
	if err := checkBaseURL(creds.URL); err != nil {
		return nil, err
	}
	u, _ := url.Parse(creds.URL)
	return &Client{cfg: cfg, base: u, creds: creds}, nil
}

// Login returns the machine id the client logs in with.
func (c *Client) Login() string { return c.creds.Login }

// SetToken installs a cached token; it is kept only if it expires more
// than a minute from now. It reports whether it was kept.
func (c *Client) SetToken(tok string) bool {
	ti, err := ParseToken(tok)
	if err != nil || ti.Expires.Sub(c.cfg.Now()) <= tokenMargin {
		return false
	}
	c.mu.Lock()
	c.token, c.info = tok, ti
	c.mu.Unlock()
	return true
}

// Token returns the current token and its claims ("" when none).
func (c *Client) Token() (string, TokenInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token, c.info
}

func (c *Client) dropToken(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token, c.info = "", TokenInfo{}
	}
	c.mu.Unlock()
}

func (c *Client) validToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.info.Expires.Sub(c.cfg.Now()) > tokenMargin {
		return c.token
	}
	return ""
}

// backoff returns the n-th (1-based) retry delay with ±50% jitter.
func backoff(cfg *Config, n int) time.Duration {
	d := cfg.RetryBase
	for i := 1; i < n && d < cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, cfg.RetryMax)
	half := int64(d) / 2
	if half <= 0 {
		return d
	}
	return time.Duration(half + rand.Int64N(2*half))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ensureToken returns a token valid for more than a minute, logging in
// when needed. Concurrent callers share one login; after a failed login
// further attempts wait for a backoff (the last error is returned).
func (c *Client) ensureToken(ctx context.Context) (string, error) {
	if tok := c.validToken(); tok != "" {
		return tok, nil
	}
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	if tok := c.validToken(); tok != "" {
		return tok, nil
	}
	if now := c.cfg.Now(); now.Before(c.loginBlocked) {
		return "", fmt.Errorf("CAPI login backing off until %s: %w", c.loginBlocked.Format(time.RFC3339), c.loginErr)
	}
	tok, err := c.login(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.loginFails++
			c.loginBlocked = c.cfg.Now().Add(backoff(c.cfg, c.loginFails))
			c.loginErr = err
		}
		return "", err
	}
	c.loginFails, c.loginErr, c.loginBlocked = 0, nil, time.Time{}
	return tok, nil
}

type loginRequest struct {
	MachineID string   `json:"machine_id"`
	Password  string   `json:"password"`
	Scenarios []string `json:"scenarios"`
}

type loginResponse struct {
	Code   int    `json:"code"`
	Expire string `json:"expire"`
	Token  string `json:"token"`
}

func (c *Client) login(ctx context.Context) (string, error) {
	sc := []string{}
	if c.Scenarios != nil {
		if s := c.Scenarios(); s != nil {
			sc = s
		}
	}
	var out loginResponse
	req := loginRequest{MachineID: c.creds.Login, Password: c.creds.Password, Scenarios: sc}
	if _, err := c.do(ctx, epLogin, http.MethodPost, "v3/watchers/login", nil, req, &out, false); err != nil {
		return "", err
	}
	if out.Token == "" {
		return "", errors.New("CAPI login: answer without token")
	}
	ti, err := ParseToken(out.Token)
	if err != nil {
		// fall back on the "expire" field
		exp, perr := time.Parse(time.RFC3339, out.Expire)
		if perr != nil {
			return "", fmt.Errorf("CAPI login: %w", err)
		}
		ti = TokenInfo{Expires: exp}
	}
	c.mu.Lock()
	c.token, c.info = out.Token, ti
	c.mu.Unlock()
	if c.OnToken != nil {
		c.OnToken(out.Token)
	}
	return out.Token, nil
}

// Register creates the CAPI watcher for the client's credentials.
func (c *Client) Register(ctx context.Context) error {
	body := map[string]string{"machine_id": c.creds.Login, "password": c.creds.Password}
	_, err := c.do(ctx, epRegister, http.MethodPost, "v3/watchers", nil, body, nil, false)
	return err
}

// Do sends an authenticated v3 call: path is relative to the base URL
// ("v3/signals"); body (if not nil) is sent as JSON, gzipped above 5 KiB;
// a 2xx or 304 answer is decoded into out (if not nil and not empty).
func (c *Client) Do(ctx context.Context, endpoint, method, path string, query url.Values, body, out any) (int, error) {
	return c.do(ctx, endpoint, method, path, query, body, out, true)
}

func encodeBody(body any) ([]byte, bool, error) {
	if body == nil {
		return nil, false, nil
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, false, err
	}
	if len(raw) <= gzipMinSize {
		return raw, false, nil
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(raw); err != nil {
		return nil, false, err
	}
	if err := zw.Close(); err != nil {
		return nil, false, err
	}
	return buf.Bytes(), true, nil
}

func (c *Client) observe(endpoint, result string) {
	if c.Observe != nil {
		c.Observe(endpoint, result)
	}
}

func (c *Client) newRequest(ctx context.Context, method, u string, payload []byte, gz bool) (*http.Request, error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range c.cfg.Header {
		req.Header[k] = append([]string(nil), v...)
	}
	req.Header.Set("User-Agent", c.cfg.UserAgent)
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
	}
	return req, nil
}

func (c *Client) do(ctx context.Context, endpoint, method, path string, query url.Values, body, out any, auth bool) (int, error) {
	ref, err := url.Parse(path)
	if err != nil {
		return 0, err
	}
	u := c.base.ResolveReference(ref)
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	payload, gz, err := encodeBody(body)
	if err != nil {
		return 0, err
	}
	authLeft := authRetries
	for try := 1; ; try++ {
		req, err := c.newRequest(ctx, method, u.String(), payload, gz)
		if err != nil {
			return 0, err
		}
		var tok string
		if auth {
			if tok, err = c.ensureToken(ctx); err != nil {
				return 0, err
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.cfg.HTTPClient.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				c.observe(endpoint, "canceled")
				return 0, ctx.Err()
			}
			c.observe(endpoint, "network_error")
			if try >= c.cfg.MaxTries {
				return 0, fmt.Errorf("CAPI %s %s: %w", method, path, err)
			}
			if err := sleepCtx(ctx, backoff(c.cfg, try)); err != nil {
				return 0, err
			}
			continue
		}
		data, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		status := resp.StatusCode
		if rerr != nil {
			if ctx.Err() != nil {
				c.observe(endpoint, "canceled")
				return 0, ctx.Err()
			}
			c.observe(endpoint, "network_error")
			if try >= c.cfg.MaxTries {
				return 0, fmt.Errorf("CAPI %s %s: reading answer: %w", method, path, rerr)
			}
			if err := sleepCtx(ctx, backoff(c.cfg, try)); err != nil {
				return 0, err
			}
			continue
		}
		switch {
		case status/100 == 2 || status == http.StatusNotModified:
			c.observe(endpoint, "ok")
			if out != nil && len(bytes.TrimSpace(data)) > 0 && status != http.StatusNotModified {
				if err := json.Unmarshal(data, out); err != nil {
					return status, fmt.Errorf("CAPI %s %s: decoding answer: %w", method, path, err)
				}
			}
			return status, nil
		case auth && (status == http.StatusUnauthorized || status == http.StatusForbidden) && authLeft > 0:
			c.observe(endpoint, strconv.Itoa(status))
			authLeft--
			c.dropToken(tok)
			try-- // an auth retry is not a transient-failure retry
			continue
		case retryableStatus(status) && try < c.cfg.MaxTries:
			c.observe(endpoint, strconv.Itoa(status))
			d := backoff(c.cfg, try)
			if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra > 0 {
				d = min(max(d, time.Duration(ra)*time.Second), c.cfg.RetryMax)
			}
			if err := sleepCtx(ctx, d); err != nil {
				return 0, err
			}
			continue
		default:
			c.observe(endpoint, strconv.Itoa(status))
			return status, newAPIError(method, path, status, data)
		}
	}
}

// Download fetches a blocklist or allowlist file: absolute URL, no
// authentication, optional If-Modified-Since. It returns the status, the
// body (200 only) and the Last-Modified time (zero if absent).
func (c *Client) Download(ctx context.Context, endpoint, rawURL string, ifModifiedSince time.Time) (int, []byte, time.Time, error) {
	req, err := c.newRequest(ctx, http.MethodGet, rawURL, nil, false)
	if err != nil {
		return 0, nil, time.Time{}, err
	}
	req.Header.Set("Accept", "*/*")
	if !ifModifiedSince.IsZero() {
		req.Header.Set("If-Modified-Since", ifModifiedSince.UTC().Format(http.TimeFormat))
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			c.observe(endpoint, "canceled")
			return 0, nil, time.Time{}, ctx.Err()
		}
		c.observe(endpoint, "network_error")
		return 0, nil, time.Time{}, fmt.Errorf("download %s: %w", redactURL(rawURL), err)
	}
	defer resp.Body.Close()
	var lm time.Time
	if v := resp.Header.Get("Last-Modified"); v != "" {
		lm, _ = http.ParseTime(v)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			c.observe(endpoint, "network_error")
			return 0, nil, lm, fmt.Errorf("download %s: %w", redactURL(rawURL), err)
		}
		c.observe(endpoint, "ok")
		return resp.StatusCode, data, lm, nil
	case http.StatusNotModified:
		c.observe(endpoint, "not_modified")
	default:
		c.observe(endpoint, strconv.Itoa(resp.StatusCode))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	}
	return resp.StatusCode, nil, lm, nil
}

// redactURL drops the query (signed download URLs carry credentials).
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "<invalid url>"
	}
	u.RawQuery, u.User = "", nil
	return u.String()
}
