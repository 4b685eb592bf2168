package lapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// direct applies commands straight to an FSM, like a one-node raft would,
// with the test's clock.
type direct struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
	now   func() time.Time
}

func (d *direct) Apply(_ context.Context, c fsm.Command) (*fsm.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c.Time = d.now().UnixNano()
	data, err := c.Encode()
	if err != nil {
		return nil, err
	}
	d.index++
	res := d.f.Apply(&raft.Log{Index: d.index, Type: raft.LogCommand, Data: data})
	return res.(*fsm.Result), nil
}

func (d *direct) IsLeader() bool { return true }

type env struct {
	t     *testing.T
	srv   *Server
	fsm   *fsm.FSM
	h     http.Handler
	clock time.Time
	mu    sync.Mutex
}

func (e *env) now() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.clock
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.clock = e.clock.Add(d)
	e.mu.Unlock()
}

func newEnv(t *testing.T, mut ...func(*Config)) *env {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BcryptCost = 4
	for _, m := range mut {
		m(&cfg)
	}
	e := &env{t: t, fsm: fsm.New(nil), clock: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)}
	d := &direct{f: e.fsm, now: e.now}
	s, err := New(cfg, e.fsm, d, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.now = e.now
	s.OnLeadership(true)
	e.srv = s
	e.h = s.Handler()
	return e
}

type resp struct {
	code int
	body string
	hdr  http.Header
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

type reqOpt func(*http.Request)

func withToken(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}
func withKey(k string) reqOpt { return func(r *http.Request) { r.Header.Set("X-Api-Key", k) } }
func withUA(ua string) reqOpt { return func(r *http.Request) { r.Header.Set("User-Agent", ua) } }
func fromIP(ip string) reqOpt { return func(r *http.Request) { r.RemoteAddr = ip + ":4242" } }
func gzipped() reqOpt         { return func(r *http.Request) { r.Header.Set("Content-Encoding", "gzip") } }
func withHeader(k, v string) reqOpt {
	return func(r *http.Request) { r.Header.Set(k, v) }
}

func (e *env) do(method, path string, body any, opts ...reqOpt) resp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req := httptest.NewRequest(method, path, rd)
	req.RemoteAddr = "127.0.0.1:4242"
	req.Header.Set("User-Agent", "crowdsec/v1.7.6-test-linux")
	for _, o := range opts {
		o(req)
	}
	if req.Header.Get("Content-Encoding") == "gzip" && rd != nil {
		raw, _ := io.ReadAll(rd)
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(raw)
		_ = zw.Close()
		req.Body = io.NopCloser(&buf)
		req.ContentLength = int64(buf.Len())
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, req)
	out := w.Body.String()
	if w.Header().Get("Content-Encoding") == "gzip" { // as Go's http.Transport does
		out = gunzipString(e.t, w.Body.Bytes())
	}
	return resp{code: w.Code, body: out, hdr: w.Header()}
}

func (e *env) expect(r resp, code int) resp {
	e.t.Helper()
	if r.code != code {
		e.t.Fatalf("status %d, want %d; body %q", r.code, code, r.body)
	}
	return r
}

// machine creates a validated machine and returns a token.
func (e *env) machine(id string) string {
	e.t.Helper()
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": id, "password": "pw-" + id}), 201)
	t := true
	if _, err := e.srv.apply(context.Background(), fsm.CmdMachineUpdate, fsm.MachineUpdate{ID: id, Validated: &t}); err != nil {
		e.t.Fatal(err)
	}
	r := e.expect(e.do("POST", "/v1/watchers/login", map[string]any{"machine_id": id, "password": "pw-" + id, "scenarios": []string{"crowdsecurity/ssh-bf"}}), 200)
	var out struct{ Token string }
	r.json(e.t, &out)
	return out.Token
}

func (e *env) bouncer(name, key string) {
	e.t.Helper()
	b := fsm.Bouncer{Name: name, KeyHash: HashKey(key), AuthType: fsm.AuthAPIKey}
	if _, err := e.srv.apply(context.Background(), fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: b}); err != nil {
		e.t.Fatal(err)
	}
}

// agentAlert is an alert as a crowdsec agent sends it (no decisions).
func agentAlert(ip string, stop time.Time) map[string]any {
	return map[string]any{
		"scenario": "crowdsecurity/ssh-bf", "scenario_hash": "h", "scenario_version": "1",
		"message": "Ip " + ip + " performed 'crowdsecurity/ssh-bf'", "events_count": 6,
		"start_at": stop.Add(-time.Minute).Format(time.RFC3339Nano), "stop_at": stop.Format(time.RFC3339Nano),
		"capacity": 5, "leakspeed": "10s", "simulated": false, "remediation": true,
		"events": []any{map[string]any{"timestamp": stop.Format(time.RFC3339), "meta": []any{map[string]string{"key": "source_ip", "value": ip}}}},
		"source": map[string]any{"scope": "Ip", "value": ip, "ip": ip},
	}
}

// manualAlert is an alert as cscli decisions add sends it.
func manualAlert(scope, value, typ, dur string, now time.Time) map[string]any {
	return map[string]any{
		"scenario": "manual", "scenario_hash": "", "scenario_version": "", "message": "manual",
		"events_count": 1, "start_at": now.Format(time.RFC3339), "stop_at": now.Format(time.RFC3339),
		"capacity": 0, "leakspeed": "0", "simulated": false, "remediation": true, "events": []any{},
		"source":    map[string]any{"scope": scope, "value": value},
		"decisions": []any{map[string]any{"duration": dur, "origin": "cscli", "scenario": "manual", "scope": scope, "type": typ, "value": value}},
	}
}

func mustPrefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range s {
		out = append(out, netip.MustParsePrefix(v))
	}
	return out
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func mustReq(method, path, body string) *http.Request {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.RemoteAddr = "@"
	return r
}
