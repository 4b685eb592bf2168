package lapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/halapi/halapi/fsm"
)

func TestValidateMachineID(t *testing.T) {
	good := []string{
		"a", "0123456789abcdef0123456789abcdefABCDEFGHIJKLMNOP", // cscli's 48 characters
		"agent-1@10.0.0.1", "web-01.example.org@2001:db8::1", "émile", strings.Repeat("x", MaxMachineIDLen),
	}
	for _, id := range good {
		if err := ValidateMachineID(id); err != nil {
			t.Errorf("ValidateMachineID(%q) = %v, want nil", id, err)
		}
	}
	bad := []string{"", strings.Repeat("x", MaxMachineIDLen+1), "a b", "a\tb", "a\nb", "\x1b[31mred", "a\x00b",
		"a\u202eb", "a\u00a0b", "\xff\xfe"}
	for _, id := range bad {
		if err := ValidateMachineID(id); err == nil {
			t.Errorf("ValidateMachineID(%q) = nil, want an error", id)
		}
	}
}

func TestDepthReader(t *testing.T) {
	read := func(s string) error {
		_, err := io.ReadAll(&depthReader{r: strings.NewReader(s), max: 3})
		// the same, one byte per read: escapes and strings across reads
		_, err1 := io.ReadAll(&depthReader{r: iotest.OneByteReader(strings.NewReader(s)), max: 3})
		if (err == nil) != (err1 == nil) {
			t.Errorf("%s: whole %v, byte by byte %v", s, err, err1)
		}
		return err
	}
	for _, s := range []string{`{"a":[{"b":1}]}`, `[[["x"]]]`, `{"s":"[[[[[[[["}`, `{"s":"\"[[[[[["}`, `[1][2][3][4]`,
		`{"s":"a\\","t":"[[[[[["}`, `["\\\"[[[[", "]]]]"]`} {
		if err := read(s); err != nil {
			t.Errorf("%s: %v, want nil", s, err)
		}
	}
	for _, s := range []string{`[[[[1]]]]`, `{"a":{"b":{"c":{}}}}`, `{"s":"\\","t":[[[[]]]]}`} {
		if err := read(s); !errors.Is(err, errTooDeep) {
			t.Errorf("%s: %v, want errTooDeep", s, err)
		}
	}
}

func TestForwardedIP(t *testing.T) {
	trusted := mustPrefixes("10.0.0.0/8")
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	cases := []struct {
		peer string
		hdr  http.Header
		want string
	}{
		{"192.0.2.1", h("X-Forwarded-For", "198.51.100.7"), "192.0.2.1"}, // untrusted peer: header ignored
		{"10.0.0.1", h("X-Forwarded-For", "198.51.100.7"), "198.51.100.7"},
		{"10.0.0.1", h("X-Forwarded-For", "6.6.6.6, 198.51.100.7, 10.0.0.2"), "198.51.100.7"}, // spoofed left part ignored
		{"10.0.0.1", h("X-Forwarded-For", "6.6.6.6", "X-Forwarded-For", "198.51.100.7"), "198.51.100.7"},
		{"10.0.0.1", h("X-Forwarded-For", "garbage"), "10.0.0.1"},
		{"10.0.0.1", h("X-Real-IP", "198.51.100.9"), "198.51.100.9"},
		{"10.0.0.1", h(), "10.0.0.1"},
		{"10.0.0.1", h("X-Forwarded-For", "10.0.0.3"), "10.0.0.3"},
		{"10.0.0.1", h("X-Forwarded-For", "::ffff:198.51.100.7"), "198.51.100.7"},
	}
	for _, c := range cases {
		if got := forwardedIP(c.peer, c.hdr, trusted); got != c.want {
			t.Errorf("forwardedIP(%s, %v) = %s, want %s", c.peer, c.hdr, got, c.want)
		}
	}
	if got := forwardedIP("10.0.0.1", h("X-Forwarded-For", "1.2.3.4"), nil); got != "10.0.0.1" {
		t.Errorf("no trusted proxies: %s, want the peer", got)
	}
}

func TestRateLimiterAndBackoff(t *testing.T) {
	now := time.Unix(1000, 0)
	rl := newRateLimiter(time.Second, 3, 2)
	for i := range 3 {
		if ok, _ := rl.allow("a", now); !ok {
			t.Fatalf("token %d refused", i)
		}
	}
	if ok, wait := rl.allow("a", now); ok || wait != time.Second {
		t.Fatalf("4th: ok %v wait %v, want refused with 1s", ok, wait)
	}
	if ok, _ := rl.allow("a", now.Add(time.Second)); !ok {
		t.Fatal("refill after 1s refused")
	}
	// bounded: the table never holds more than its max
	for i := range 100 {
		rl.allow(fmt.Sprint("k", i), now)
	}
	if n := len(rl.m.m); n > 2 {
		t.Fatalf("rate limiter holds %d entries, max 2", n)
	}

	fb := newFailBackoff(2, time.Second, 4*time.Second, time.Minute, 10)
	fb.fail("x", now)
	fb.fail("x", now)
	if d := fb.blocked("x", now); d != 0 {
		t.Fatalf("blocked %v after the free failures", d)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	for i, w := range want {
		fb.fail("x", now)
		if d := fb.blocked("x", now); d != w {
			t.Fatalf("failure %d: blocked %v, want %v", i+3, d, w)
		}
	}
	if d := fb.blocked("x", now.Add(4*time.Second)); d != 0 {
		t.Fatalf("still blocked %v after the block", d)
	}
	// forgotten after a quiet minute
	fb.fail("x", now.Add(2*time.Minute))
	if d := fb.blocked("x", now.Add(2*time.Minute)); d != 0 {
		t.Fatalf("blocked %v on the first failure after a quiet period", d)
	}
	fb.reset("x")
	if len(fb.m.m) != 0 {
		t.Fatal("reset kept the entry")
	}
}

func TestLimitKeyIPv6(t *testing.T) {
	if a, b := limitKey("2001:db8::1"), limitKey("2001:db8::ffff:1"); a != b {
		t.Fatalf("one /64, two keys: %s %s", a, b)
	}
	if a, b := limitKey("2001:db8::1"), limitKey("2001:db8:0:1::1"); a == b {
		t.Fatalf("two /64s, one key %s", a)
	}
	if k := limitKey("::ffff:10.1.2.3"); k != "10.1.2.3" {
		t.Fatalf("mapped IPv4 key %s", k)
	}
}

func TestKeyCacheHoldsOnlyVerifiedKeys(t *testing.T) {
	e := newEnv(t)
	e.bouncer("fw", "good-key-0123456789")
	for i := range 50 {
		e.expect(e.do("GET", "/v1/decisions", nil, withKey(fmt.Sprintf("junk-%d-%s", i, strings.Repeat("j", 1000)))), 403)
	}
	e.expect(e.do("GET", "/v1/decisions", nil, withKey(strings.Repeat("k", MaxAPIKeyLen+1))), 403)
	if n := len(e.srv.keyHashes.m); n != 0 {
		t.Fatalf("junk keys cached: %d entries", n)
	}
	e.expect(e.do("GET", "/v1/decisions", nil, withKey("good-key-0123456789")), 200)
	if h := e.srv.keyHashes.get("good-key-0123456789"); h != HashKey("good-key-0123456789") {
		t.Fatalf("verified key not cached: %q", h)
	}
}

func TestRegisterValidation(t *testing.T) {
	e := newEnv(t)
	for _, id := range []string{"", "a b", "\x1b]0;pwned\x07", strings.Repeat("x", MaxMachineIDLen+1)} {
		r := e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": id, "password": "p"}), 400)
		if !strings.Contains(r.body, "machine_id") {
			t.Errorf("id %q: message %q does not name machine_id", id, r.body)
		}
	}
	r := e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "m", "password": strings.Repeat("p", 73)}), 400)
	if !strings.Contains(r.body, "72 bytes") {
		t.Errorf("long password: %q", r.body)
	}
	r = e.expect(e.do("POST", "/v1/watchers", `{"machine_id":"m","password":"p","x":`+strings.Repeat("[", 40)+`]}`), 400)
	if !strings.Contains(r.body, "nesting") {
		t.Errorf("deep body: %q", r.body)
	}
	if n := len(e.fsm.Machines()); n != 0 {
		t.Fatalf("%d machines stored from refused registrations", n)
	}
	// admin add applies the same rules
	e.srv.adminAddMachine(newRecorder(), mustReq("POST", "/machines", `{"machine_id":"bad\u001bid"}`))
	if n := len(e.fsm.Machines()); n != 0 {
		t.Fatal("admin add stored an id with a control character")
	}
}

func TestRegistrationLimits(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RegisterBurst, c.RegisterEvery, c.MaxUnvalidatedMachines = 3, time.Minute, 5 })
	reg := func(id, ip string) resp {
		return e.do("POST", "/v1/watchers", map[string]string{"machine_id": id, "password": "p"}, fromIP(ip))
	}
	// an old validated machine (added by an operator) is never expired
	if _, err := e.srv.apply(context.Background(), fsm.CmdMachineCreate, fsm.MachineCreate{Machine: fsm.Machine{
		ID: "validated", PasswordHash: []byte("x"), Validated: true, AuthType: fsm.AuthPassword}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.expect(reg(fmt.Sprint("a", i), "192.0.2.1"), 201)
	}
	r := e.expect(reg("a3", "192.0.2.1"), 429)
	if r.hdr.Get("Retry-After") != "60" {
		t.Errorf("Retry-After %q, want 60", r.hdr.Get("Retry-After"))
	}
	// another source is not affected, up to the pending cap
	e.expect(reg("b0", "192.0.2.2"), 201)
	e.expect(reg("b1", "192.0.2.2"), 201)
	r = e.expect(reg("b2", "192.0.2.2"), 429)
	if !strings.Contains(r.body, "waiting for validation") {
		t.Errorf("cap message %q", r.body)
	}
	// the refill comes back after RegisterEvery
	e.advance(time.Minute)
	e.expect(reg("a4", "192.0.2.1"), 429) // still capped

	// expiry frees the cap: only old, unvalidated password machines go
	e.advance(24 * time.Hour)
	if err := e.srv.ExpireUnvalidated(context.Background()); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range e.fsm.Machines() {
		ids = append(ids, m.ID)
	}
	if strings.Join(ids, ",") != "validated" {
		t.Fatalf("after expiry: %v, want [validated]", ids)
	}
	e.expect(reg("b3", "192.0.2.2"), 201)
}

func TestLoginOneAnswerAndBackoff(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LoginFreeFailures = 3 })
	e.machine("m1") // logs in from 127.0.0.1
	login := func(id, pw, ip string) resp {
		return e.do("POST", "/v1/watchers/login", map[string]string{"machine_id": id, "password": pw}, fromIP(ip))
	}
	unknown := login("nobody", "x", "192.0.2.1")
	wrong := login("m1", "x", "192.0.2.1")
	long := login("m1", strings.Repeat("x", 100), "192.0.2.1")
	for _, r := range []resp{unknown, wrong, long} {
		if r.code != 401 || !strings.Contains(r.body, `"message":"incorrect Username or Password"`) {
			t.Fatalf("failed login: %d %q, want 401 incorrect Username or Password", r.code, r.body)
		}
	}
	e.expect(login("m1", "x", "192.0.2.1"), 401) // the first failure over the free ones
	r := e.expect(login("m1", "x", "192.0.2.1"), 429)
	if r.hdr.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q, want 1", r.hdr.Get("Retry-After"))
	}
	// even the right password waits: the block is decided before it is checked
	e.expect(login("m1", "pw-m1", "192.0.2.1"), 429)
	// the machine's own address is not locked out by guesses from elsewhere
	e.expect(login("m1", "pw-m1", "127.0.0.1"), 200)
	// another address guessing the same id is throttled per machine id...
	e.expect(login("m2x", "x", "192.0.2.9"), 401)
	for range 4 {
		e.expect(login("m1", "x", "198.51.100.1"), 401)
	}
	e.expect(login("m1", "pw-m1", "198.51.100.50"), 429) // a fresh address, a blocked id
	e.advance(2 * time.Second)
	e.expect(login("m1", "pw-m1", "192.0.2.1"), 200) // block over; success resets the id's counter
	e.expect(login("m1", "pw-m1", "198.51.100.50"), 200)

	var got float64
	if mfs, err := e.srv.metrics.Registry.Gather(); err == nil {
		for _, mf := range mfs {
			if mf.GetName() == "halapi_login_failures_total" {
				for _, m := range mf.GetMetric() {
					got += m.GetCounter().GetValue()
				}
			}
		}
	}
	if got < 7 {
		t.Fatalf("halapi_login_failures_total = %v, want >= 7", got)
	}
}

func TestTrustedProxyClientIP(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.TrustedProxies = mustPrefixes("192.0.2.0/24") })
	reg := func(id, peer string) {
		e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": id, "password": "p"}, fromIP(peer),
			withHeader("X-Forwarded-For", "203.0.113.5")), 201)
	}
	reg("via-proxy", "192.0.2.10")
	reg("direct", "198.51.100.1")
	if ip := e.fsm.Machine("via-proxy").IP; ip != "203.0.113.5" {
		t.Errorf("through a trusted proxy: IP %s, want 203.0.113.5", ip)
	}
	if ip := e.fsm.Machine("direct").IP; ip != "198.51.100.1" {
		t.Errorf("from an untrusted peer: IP %s, want the peer 198.51.100.1", ip)
	}
}

func TestLimitListener(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan string, 10)
	ln := LimitListener(raw, ConnLimits{Total: 3, PerIP: 2, OnRefuse: func(r string) { refused <- r }})
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
		c, err := d.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var held []net.Conn
	want := func(what string) {
		t.Helper()
		select {
		case c := <-accepted:
			held = append(held, c)
			if what != "accepted" {
				t.Fatalf("accepted, want %s", what)
			}
		case r := <-refused:
			if r != what {
				t.Fatalf("refused (%s), want %s", r, what)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("nothing happened, want %s", what)
		}
	}
	for range 2 {
		dial("127.0.0.1")
		want("accepted")
	}
	dial("127.0.0.1")
	want("per_ip")
	dial("127.0.0.2")
	want("accepted")
	dial("127.0.0.3")
	want("total")
	// closing a connection frees its slots (twice is harmless)
	held[0].Close()
	held[0].Close()
	dial("127.0.0.1")
	want("accepted")
	dial("127.0.0.3")
	want("total")
}

func TestBodyDeadlineCutsTrickle(t *testing.T) {
	h := BodyDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, len(b))
	}), 300*time.Millisecond, 1000)
	srv := httptest.NewServer(h)
	defer srv.Close()

	// an honest body passes
	resp, err := http.Post(srv.URL, "application/json", strings.NewReader(strings.Repeat("x", 100000)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "100000" {
		t.Fatalf("honest body: %q", b)
	}

	// a trickle is cut off
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		_, err := http.ReadResponse(bufio.NewReader(c), nil)
		done <- err
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("cut after %v", el)
			}
			return
		case <-tick.C:
			if time.Since(start) > 5*time.Second {
				t.Fatal("trickling body not cut off within 5 s")
			}
			_, _ = c.Write([]byte("x"))
		}
	}
}

// TestBodyDeadlineSparesSlowHandlers: once the body is read, a handler
// that works past the body deadline (a raft write waiting for a leader)
// keeps its request context and answers.
func TestBodyDeadlineSparesSlowHandlers(t *testing.T) {
	h := BodyDeadline(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		select {
		case <-r.Context().Done():
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case <-time.After(800 * time.Millisecond): // past the 200 ms grace
		}
		fmt.Fprint(w, "done")
	}), 200*time.Millisecond, 1000)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for range 2 { // the second request reuses the kept-alive connection
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader(`{"a":1}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "done" {
			t.Fatalf("slow handler after the body: %d %q", resp.StatusCode, b)
		}
	}
}

// TestRetentionExpiresUnvalidated: the leader's retention job (Retention) deletes
// machines left unvalidated past the TTL.
func TestRetentionExpiresUnvalidated(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.FlushEvery, c.UnvalidatedMachineTTL = 10*time.Millisecond, time.Hour })
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "pending", "password": "p"}), 201)
	e.advance(2 * time.Hour)
	e.expect(e.do("POST", "/v1/watchers", map[string]string{"machine_id": "fresh", "password": "p"}), 201)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = e.srv.Retention(ctx) }() // the leader job
	deadline := time.Now().Add(5 * time.Second)
	for e.fsm.Machine("pending") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the retention job did not delete the expired unvalidated machine within 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if e.fsm.Machine("fresh") == nil {
		t.Fatal("the retention job deleted a machine younger than the TTL")
	}
}
