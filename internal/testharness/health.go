package testharness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// PollInterval is the period of the harness's polls.
const PollInterval = 50 * time.Millisecond

// WaitHealthy polls GET healthURL until it answers 200 {"status":"up"}, as
// halapi's /health does. tlsConfig, when not nil, gives the client's TLS
// configuration for an https URL; an error from it means "not yet" (the CA
// certificate may not be on disk yet). It fails when p exits first, when
// timeout passes, or when ctx ends.
func WaitHealthy(ctx context.Context, p *Process, healthURL string, tlsConfig func() (*tls.Config, error), timeout time.Duration) error {
	last := "no answer yet"
	err := poll(ctx, timeout, func() (bool, string, error) {
		select {
		case <-p.Done():
			return false, "", fmt.Errorf("halapi exited before becoming healthy: %v (last /health: %s)", p.Exit(), last)
		default:
		}
		ok, why := healthy(ctx, healthURL, tlsConfig)
		last = why
		return ok, last, nil
	})
	var te *TimeoutError
	if errors.As(err, &te) {
		return fmt.Errorf("halapi not healthy within %s: last /health: %s", timeout, last)
	}
	return err
}

// healthy asks /health once.
func healthy(ctx context.Context, healthURL string, tlsConfig func() (*tls.Config, error)) (bool, string) {
	tr := &http.Transport{DisableKeepAlives: true}
	if tlsConfig != nil {
		cfg, err := tlsConfig()
		if err != nil {
			return false, err.Error()
		}
		tr.TLSClientConfig = cfg
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: time.Second, Transport: tr}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, healthURL, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("status %d, body %q", resp.StatusCode, body)
	}
	var h struct {
		Status string `json:"status"`
	}
	if json.Unmarshal(body, &h) != nil || h.Status != "up" {
		return false, fmt.Sprintf("status 200 but body %q (want {\"status\":\"up\"})", body)
	}
	return true, ""
}

// TimeoutError is a poll that ran out of time.
type TimeoutError struct {
	Timeout time.Duration
	Last    string // what the condition said last
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("not true within %s; last: %s", e.Timeout, e.Last)
}

// Poll calls cond every PollInterval until it returns true (nil), timeout
// passes (a *TimeoutError) or ctx ends.
func Poll(ctx context.Context, timeout time.Duration, cond func() (bool, string)) error {
	return poll(ctx, timeout, func() (bool, string, error) {
		ok, last := cond()
		return ok, last, nil
	})
}

// poll is Poll whose condition may also give up: a non-nil error ends the
// poll with it.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, string, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		ok, last, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), last)
		case <-deadline.C:
			return &TimeoutError{Timeout: timeout, Last: last}
		case <-tick.C:
		}
	}
}
