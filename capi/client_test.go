package capi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
)

func newTestClient(t *testing.T, fake *capitest.Server, login string) (*Client, *Config) {
	t.Helper()
	cfg := testConfig(fake)
	cfg.fill()
	cl, err := NewClient(&cfg, fakeCreds(fake, login))
	if err != nil {
		t.Fatal(err)
	}
	return cl, &cfg
}

func TestLoginOnceThenReuseToken(t *testing.T) {
	fake := newFake(t)
	cl, _ := newTestClient(t, fake, "m1")
	var saved []string
	cl.OnToken = func(tok string) { saved = append(saved, tok) }
	cl.Scenarios = func() []string { return []string{"crowdsecurity/ssh-bf", "crowdsecurity/http-probing"} }
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := cl.Do(ctx, epMetrics, http.MethodPost, "v3/metrics/", nil, map[string]string{"a": "b"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := fake.Count(capitest.Login); n != 1 {
		t.Fatalf("logins = %d, want 1", n)
	}
	if len(saved) != 1 {
		t.Fatalf("OnToken calls = %d", len(saved))
	}
	if got := fake.LoginScenarios("m1"); strings.Join(got, ",") != "crowdsecurity/ssh-bf,crowdsecurity/http-probing" {
		t.Fatalf("login scenarios %v", got)
	}
	for _, r := range fake.Requests(capitest.Metrics) {
		if r.Header.Get("Authorization") != "Bearer "+saved[0] {
			t.Fatalf("metrics call without the token: %q", r.Header.Get("Authorization"))
		}
		if r.Header.Get("User-Agent") != "crowdsec/v1.7.6-halapi" {
			t.Fatalf("user agent %q", r.Header.Get("User-Agent"))
		}
		if r.Path != "/v3/metrics/" {
			t.Fatalf("metrics path %q lost its trailing slash", r.Path)
		}
	}
	// login itself carries no bearer
	if h := fake.Requests(capitest.Login)[0].Header.Get("Authorization"); h != "" {
		t.Fatalf("login sent Authorization %q", h)
	}
}

func TestTokenRefreshedWhenLessThanAMinuteLeft(t *testing.T) {
	fake := newFake(t)
	fake.SetTokenTTL(50 * time.Second) // always "expiring soon"
	cl, _ := newTestClient(t, fake, "m1")
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := cl.Do(ctx, epSignals, http.MethodPost, "v3/signals", nil, []Signal{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := fake.Count(capitest.Login); n != 3 {
		t.Fatalf("logins = %d, want one per call", n)
	}
}

func TestCachedTokenReusedWithoutLogin(t *testing.T) {
	fake := newFake(t)
	cl, _ := newTestClient(t, fake, "m1")
	if cl.SetToken(fake.IssueToken("m1", 30*time.Second)) {
		t.Fatal("a token expiring within a minute must not be reused")
	}
	if cl.SetToken("not-a-jwt") {
		t.Fatal("garbage accepted")
	}
	tok := fake.IssueToken("m1", time.Hour)
	if !cl.SetToken(tok) {
		t.Fatal("valid token refused")
	}
	if _, err := cl.Do(context.Background(), epMetrics, http.MethodPost, "v3/metrics/", nil, struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	if n := fake.Count(capitest.Login); n != 0 {
		t.Fatalf("logins = %d, want 0", n)
	}
}

func TestRetriesOnRateLimitAndServerErrors(t *testing.T) {
	fake := newFake(t)
	cl, _ := newTestClient(t, fake, "m1")
	fake.Script(capitest.Signals, capitest.Response{Status: 503, Body: `{"message":"busy"}`},
		capitest.Response{Status: 429, Body: `{"message":"slow down"}`})
	if _, err := cl.Do(context.Background(), epSignals, http.MethodPost, "v3/signals", nil, []Signal{}, nil); err != nil {
		t.Fatalf("should succeed on the third try: %v", err)
	}
	if n := fake.Count(capitest.Signals); n != 3 {
		t.Fatalf("signal calls = %d, want 3", n)
	}
	// gives up after MaxTries (3)
	fake.Script(capitest.Signals, capitest.Response{Status: 500}, capitest.Response{Status: 502}, capitest.Response{Status: 504})
	_, err := cl.Do(context.Background(), epSignals, http.MethodPost, "v3/signals", nil, []Signal{}, nil)
	if StatusOf(err) != 504 || !Temporary(err) {
		t.Fatalf("want a temporary 504 error, got %v", err)
	}
	// a 400 is not retried
	fake.Reset()
	fake.Script(capitest.Signals, capitest.Response{Status: 400, Body: `{"message":"bad"}`})
	_, err = cl.Do(context.Background(), epSignals, http.MethodPost, "v3/signals", nil, []Signal{}, nil)
	if StatusOf(err) != 400 || Temporary(err) || fake.Count(capitest.Signals) != 1 {
		t.Fatalf("400: err %v, calls %d", err, fake.Count(capitest.Signals))
	}
}

func TestUnauthorizedTriggersReloginAndRetry(t *testing.T) {
	fake := newFake(t)
	cl, _ := newTestClient(t, fake, "m1")
	ctx := context.Background()
	if _, err := cl.Do(ctx, epMetrics, http.MethodPost, "v3/metrics/", nil, struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	fake.RevokeTokens()
	if _, err := cl.Do(ctx, epMetrics, http.MethodPost, "v3/metrics/", nil, struct{}{}, nil); err != nil {
		t.Fatalf("revoked token should lead to a new login: %v", err)
	}
	if n := fake.Count(capitest.Login); n != 2 {
		t.Fatalf("logins = %d, want 2", n)
	}
	// persistent 403: two re-logins, then the error
	fake.Script(capitest.Metrics, capitest.Response{Status: 403}, capitest.Response{Status: 403}, capitest.Response{Status: 403})
	_, err := cl.Do(ctx, epMetrics, http.MethodPost, "v3/metrics/", nil, struct{}{}, nil)
	if StatusOf(err) != 403 {
		t.Fatalf("want 403, got %v", err)
	}
	if n := fake.Count(capitest.Login); n != 4 {
		t.Fatalf("logins = %d, want 4", n)
	}
}

func TestNetworkErrorsRetriedThenReported(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.fill()
	dead := capitest.New()
	base := dead.BaseURL()
	dead.Close()
	cl, err := NewClient(&cfg, Credentials{URL: base, Login: "m", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = cl.Register(context.Background())
	if err == nil || StatusOf(err) != 0 || !Temporary(err) {
		t.Fatalf("want a temporary network error, got %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("retries took too long")
	}
	// a cancelled context stops at once and is not "temporary"
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := cl.Register(ctx); !errors.Is(err, context.Canceled) || Temporary(err) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestFailedLoginBacksOff(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.RetryBase, cfg.RetryMax = time.Hour, time.Hour
	cfg.fill()
	cl, _ := NewClient(&cfg, Credentials{URL: fake.BaseURL(), Login: "nobody", Password: "x"})
	_, err := cl.Do(context.Background(), epMetrics, http.MethodPost, "v3/metrics/", nil, struct{}{}, nil)
	if StatusOf(err) != 401 {
		t.Fatalf("want 401 from login, got %v", err)
	}
	_, err = cl.Do(context.Background(), epMetrics, http.MethodPost, "v3/metrics/", nil, struct{}{}, nil)
	if err == nil || !strings.Contains(err.Error(), "backing off") || StatusOf(err) != 401 {
		t.Fatalf("second call should wait for the login backoff: %v", err)
	}
	if n := fake.Count(capitest.Login); n != 1 {
		t.Fatalf("logins = %d, want 1", n)
	}
}

func TestLargeBodiesAreGzipped(t *testing.T) {
	fake := newFake(t)
	cl, _ := newTestClient(t, fake, "m1")
	small := []Signal{{Scenario: "a"}}
	big := make([]Signal, 50)
	for i := range big {
		big[i] = Signal{Scenario: "crowdsecurity/ssh-bf", Message: strings.Repeat("x", 200)}
	}
	ctx := context.Background()
	for _, body := range [][]Signal{small, big} {
		if _, err := cl.Do(ctx, epSignals, http.MethodPost, "v3/signals", nil, body, nil); err != nil {
			t.Fatal(err)
		}
	}
	rs := fake.Requests(capitest.Signals)
	if rs[0].Gzipped || rs[0].Header.Get("Content-Encoding") != "" {
		t.Fatal("small body gzipped")
	}
	if !rs[1].Gzipped || rs[1].Header.Get("Content-Encoding") != "gzip" {
		t.Fatal("large body not gzipped")
	}
	var got []Signal
	if err := json.Unmarshal(rs[1].Body, &got); err != nil || len(got) != 50 {
		t.Fatalf("gunzipped body: %v (%d)", err, len(got))
	}
	if len(fake.Signals()) != 51 {
		t.Fatalf("fake saw %d signals", len(fake.Signals()))
	}
}

func TestErrorShapes(t *testing.T) {
	fake := newFake(t)
	cl, _ := newTestClient(t, fake, "m1")
	cases := []struct {
		resp capitest.Response
		want APIError
		text string
	}{
		{capitest.Response{Status: 400, Body: `{"message":"bad input","errors":"field x"}`},
			APIError{Status: 400, Message: "bad input", Errors: "field x"}, "http 400: bad input (field x)"},
		{capitest.Response{Status: 422, Body: `{"message":"invalid","errors":[{"field":"a"}]}`},
			APIError{Status: 422, Message: "invalid", Errors: `[{"field":"a"}]`}, "invalid ([{\"field\":\"a\"}])"},
		{capitest.Response{Status: 404, Body: `<html>not here</html>`},
			APIError{Status: 404, Body: "<html>not here</html>"}, "http 404: <html>not here</html>"},
		{capitest.Response{Status: 409}, APIError{Status: 409}, "http 409, empty body"},
	}
	for _, c := range cases {
		fake.Script(capitest.UsageMetrics, c.resp)
		_, err := cl.Do(context.Background(), epUsageMetrics, http.MethodPost, "v3/usage-metrics", nil, struct{}{}, nil)
		var ae *APIError
		if !errors.As(err, &ae) {
			t.Fatalf("%d: not an APIError: %v", c.want.Status, err)
		}
		if ae.Status != c.want.Status || ae.Message != c.want.Message || ae.Errors != c.want.Errors || ae.Body != c.want.Body {
			t.Fatalf("got %+v want %+v", *ae, c.want)
		}
		if !strings.Contains(err.Error(), c.text) || !strings.Contains(err.Error(), "v3/usage-metrics") {
			t.Fatalf("message %q lacks %q", err.Error(), c.text)
		}
	}
	// an empty 2xx body is fine, and 2xx bodies decode
	fake.Script(capitest.Metrics, capitest.Response{Status: 201})
	var out map[string]any
	if _, err := cl.Do(context.Background(), epMetrics, http.MethodPost, "v3/metrics/", nil, struct{}{}, &out); err != nil {
		t.Fatal(err)
	}
}

func TestParseToken(t *testing.T) {
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	ti, err := ParseToken(capitest.MakeToken("m", exp, map[string]any{"organization_id": "org1", "subscription_type": "COMMUNITY"}))
	if err != nil || !ti.Expires.Equal(exp) || ti.OrganizationID != "org1" || ti.SubscriptionType != "COMMUNITY" {
		t.Fatalf("%+v %v", ti, err)
	}
	for _, bad := range []string{"", "a.b", "a.!!!.c", "a.e30.c" /* {} */} {
		if _, err := ParseToken(bad); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
}

func TestParseCredentials(t *testing.T) {
	c, err := ParseCredentials([]byte("url: https://api.crowdsec.net/\nlogin: abc\npassword: pw\n"))
	if err != nil || c.Login != "abc" || c.PapiURL != DefaultPapiURL {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = ParseCredentials([]byte("url: http://x/\nlogin: a\npassword: p\npapi_url: http://p/\nca_cert_path: /x\n"))
	if err != nil || c.PapiURL != "http://p/" {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{
		"url: http://x/\nlogin: a\npassword: p\nextra: 1\n", // strict keys
		"url: http://x/\nlogin: a\n",                        // missing password
		"url: http://x\nlogin: a\npassword: p\n",            // no trailing slash
		"url: ftp://x/\nlogin: a\npassword: p\n",
	} {
		if _, err := ParseCredentials([]byte(bad)); err == nil {
			t.Fatalf("accepted:\n%s", bad)
		}
	}
	back, err := ParseCredentials(MarshalCredentials(Credentials{URL: "http://x/", Login: "l", Password: "p"}))
	if err != nil || back.Login != "l" || back.Password != "p" {
		t.Fatalf("round trip %+v %v", back, err)
	}
}

func TestGenerateCredentials(t *testing.T) {
	c, err := GenerateCredentials("")
	if err != nil {
		t.Fatal(err)
	}
	alnum := func(s string) bool {
		for _, r := range s {
			if !strings.ContainsRune(idAlphabet, r) && !(r >= 'a' && r <= 'f') && !(r >= '0' && r <= '9') {
				return false
			}
		}
		return true
	}
	if len(c.Login) != 48 || len(c.Password) != 64 || !alnum(c.Login) || !alnum(c.Password) || c.URL != DefaultURL {
		t.Fatalf("%+v", c)
	}
}
