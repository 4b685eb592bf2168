package e2e

// What an anonymous client can do to a node, with the real binary on
// loopback: oversized or junk credentials, bad machine ids, registration
// floods, slow bodies, connection floods, password guessing, spoofed
// forwarding headers. 127.0.0.2 and up are used as other source addresses.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/models"
	"github.com/go-openapi/strfmt"
)

// anonClient is a plain HTTP client whose connections come from src.
func anonClient(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DialContext: d.DialContext,
		DisableKeepAlives: true}}
}

type anonResp struct {
	code int
	hdr  http.Header
	body string
}

// anonDo sends one request; body is JSON-encoded unless it is a string.
func anonDo(t testing.TB, c *http.Client, method, url string, body any, hdr map[string]string) (anonResp, error) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", watcherUA)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return anonResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return anonResp{code: resp.StatusCode, hdr: resp.Header, body: string(b)}, err
}

func mustAnonDo(t testing.TB, c *http.Client, method, url string, body any, hdr map[string]string) anonResp {
	t.Helper()
	r, err := anonDo(t, c, method, url, body, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// vmRSS reads the resident set size of pid from /proc.
func vmRSS(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// listedMachines returns `machines list -o json` by machine id.
func listedMachines(t testing.TB, s *Server) map[string]map[string]any {
	t.Helper()
	var items []map[string]any
	out := s.MustCLI("machines", "list", "-o", "json")
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("machines list: %v\n%s", err, out)
	}
	m := map[string]map[string]any{}
	for _, it := range items {
		id, _ := it["machine_id"].(string)
		m[id] = it
	}
	return m
}

func TestAnonJunkAPIKeysLeaveRSSFlat(t *testing.T) {
	s := StartServer(t)
	addBouncer(t, s, "fw", "e2e-anon-bouncer-key-0123456789")
	pid := s.Pid()
	c := anonClient("127.0.0.1")
	url := s.URL + "v1/decisions?ip=1.2.3.4"

	// warm up the paths once, then measure
	mustAnonDo(t, c, "GET", url, nil, map[string]string{"X-Api-Key": "junk"})
	before := vmRSS(t, pid)

	// 600 distinct ~1 MB keys: over the header bound, refused before any
	// handler runs (431, or the connection is closed mid-upload).
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	work := make(chan int)
	// many at once: the server lingers 0.5 s before closing each refused
	// connection (net/http's reset avoidance)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				key := fmt.Sprintf("%06d", i) + strings.Repeat("k", 1<<20)
				r, err := anonDo(t, c, "GET", url, nil, map[string]string{"X-Api-Key": key})
				if err == nil && r.code < 400 {
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range 600 {
		work <- i
	}
	close(work)
	wg.Wait()
	if accepted > 0 {
		t.Fatalf("%d junk keys were accepted", accepted)
	}
	// and 2,000 distinct keys under the header bound: refused with 403 and
	// never cached
	c2 := anonClient("127.0.0.1")
	for i := range 2000 {
		key := fmt.Sprintf("%06d", i) + strings.Repeat("s", 400)
		if r := mustAnonDo(t, c2, "GET", url, nil, map[string]string{"X-Api-Key": key}); r.code != 403 {
			t.Fatalf("junk key of 406 bytes: status %d, want 403", r.code)
		}
	}
	after := vmRSS(t, pid)
	growth := after - before
	t.Logf("VmRSS before %d MiB, after %d MiB (growth %d MiB)", before>>20, after>>20, growth>>20)
	if growth > 50<<20 {
		t.Fatalf("VmRSS grew by %d MiB after junk keys, want < 50 MiB", growth>>20)
	}
	// the real key still works
	if r := mustAnonDo(t, c, "GET", url, nil, map[string]string{"X-Api-Key": "e2e-anon-bouncer-key-0123456789"}); r.code != 200 {
		t.Fatalf("real key: status %d %s", r.code, r.body)
	}
}

func TestAnonBadMachineIDsRefused(t *testing.T) {
	s := StartServer(t)
	c := anonClient("127.0.0.1")
	cases := map[string]string{
		"empty":            "",
		"too long":         strings.Repeat("a", 256),
		"space":            "two words",
		"newline":          "a\nb",
		"terminal escape":  "\x1b[2J\x1b[31mowned",
		"bidi override":    "abc\u202edef",
		"NUL":              "a\x00b",
		"title escape OSC": "\x1b]0;pwned\x07",
	}
	for what, id := range cases {
		r := mustAnonDo(t, c, "POST", s.URL+"v1/watchers", map[string]string{"machine_id": id, "password": "pw"}, nil)
		var msg struct{ Message string }
		_ = json.Unmarshal([]byte(r.body), &msg)
		if r.code != 400 || !strings.Contains(msg.Message, "machine_id") {
			t.Errorf("%s: status %d body %q, want 400 with a message about machine_id", what, r.code, r.body)
		}
	}
	// a 30 MB id is refused before it is read whole
	big := `{"password":"pw","machine_id":"` + strings.Repeat("x", 30<<20) + `"}`
	if r, err := anonDo(t, c, "POST", s.URL+"v1/watchers", big, nil); err == nil && r.code != 400 {
		t.Errorf("30 MB id: status %d, want 400", r.code)
	}
	// a long password is refused with the reason
	r := mustAnonDo(t, c, "POST", s.URL+"v1/watchers", map[string]string{"machine_id": "ok", "password": strings.Repeat("p", 73)}, nil)
	if r.code != 400 || !strings.Contains(r.body, "72 bytes") {
		t.Errorf("73-byte password: %d %q", r.code, r.body)
	}
	if ms := listedMachines(t, s); len(ms) != 0 {
		t.Fatalf("refused registrations stored machines: %v", ms)
	}
	// the admin CLI applies the same rule
	if out, err := s.CLI("machines", "add", "bad\x1b[0mid", "--password", "pw"); err == nil {
		t.Fatalf("machines add with an escape sequence succeeded: %s", out)
	}
	// a cscli-style id still registers
	id := "0123456789abcdef0123456789abcdefABCDEFGHIJKLMNOP"
	if err := registerWatcher(t, s, id, "pw-0123456789"); err != nil {
		t.Fatalf("48-character id: %v", err)
	}
}

func TestAnonRegistrationFloodLimited(t *testing.T) {
	const pendingCap = 25
	s := StartServer(t, func(s *Server) {
		s.ExtraArgs = append(s.ExtraArgs, "--max-unvalidated-machines", fmt.Sprint(pendingCap))
	})
	reg := func(src, id string) anonResp {
		return mustAnonDo(t, anonClient(src), "POST", s.URL+"v1/watchers", map[string]string{"machine_id": id, "password": "pw"}, nil)
	}
	// one address: a burst of 20, then one more every 3 s
	start := time.Now()
	created := 0
	var refused anonResp
	for i := range 40 {
		r := reg("127.0.0.2", fmt.Sprintf("flood-%d", i))
		if r.code == 201 {
			created++
			continue
		}
		refused = r
		break
	}
	allowed := 20 + int(time.Since(start)/(3*time.Second))
	if created < 20 || created > allowed || refused.code != 429 || refused.hdr.Get("Retry-After") == "" {
		t.Fatalf("flood from one address: %d created (allowed %d), then %d (Retry-After %q); want 20.. then 429 with Retry-After",
			created, allowed, refused.code, refused.hdr.Get("Retry-After"))
	}
	// another address still registers, up to the cap of pending machines
	for i := 0; ; i++ {
		r := reg("127.0.0.3", fmt.Sprintf("other-%d", i))
		if r.code == 201 {
			continue
		}
		if r.code != 429 || !strings.Contains(r.body, "waiting for validation") {
			t.Fatalf("registration %d from another address: %d %s, want 201 until the pending cap", i, r.code, r.body)
		}
		break
	}
	if n := len(listedMachines(t, s)); n != pendingCap {
		t.Fatalf("%d machines stored, want the cap %d", n, pendingCap)
	}
	r := reg("127.0.0.4", "one-too-many")
	if r.code != 429 || !strings.Contains(r.body, "waiting for validation") {
		t.Fatalf("over the pending cap: %d %q, want 429 naming the cap", r.code, r.body)
	}
	// validating frees room
	s.MustCLI("machines", "validate", "flood-0")
	if r := reg("127.0.0.4", "after-validate"); r.code != 201 {
		t.Fatalf("after a validation: %d %s", r.code, r.body)
	}
}

func TestAnonSlowBodyCutOff(t *testing.T) {
	s := StartServer(t, func(s *Server) { s.ExtraArgs = append(s.ExtraArgs, "--body-timeout", "2s") })
	addMachine(t, s, "slow-agent", "slow-agent-password-0123")

	// a trickling body is cut off within the deadline
	conn, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/watchers/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		br := bufio.NewReader(conn)
		for {
			if _, err := br.ReadByte(); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-closed:
			done = true
		case <-tick.C:
			if time.Since(start) > 10*time.Second {
				t.Fatal("a body trickled at 5 bytes/s was not cut off within 10 s (deadline 2 s)")
			}
			_, _ = conn.Write([]byte(" "))
		}
	}
	el := time.Since(start)
	t.Logf("trickling body cut off after %v (deadline 2 s)", el.Round(time.Millisecond))
	if el > 3500*time.Millisecond {
		t.Fatalf("trickle cut off after %v, want about 2 s", el)
	}

	// an honest 830 kB login sent at 256 kB/s (3.5 s, past the 2 s grace)
	// is not: the deadline moves with the data
	scen := make([]string, 0, 16000)
	for i := 0; len(scen) < cap(scen); i++ {
		scen = append(scen, fmt.Sprintf("crowdsecurity/scenario-%05d-xxxxxxxxxxxxxxxxxxx", i))
	}
	body, _ := json.Marshal(map[string]any{"machine_id": "slow-agent", "password": "slow-agent-password-0123", "scenarios": scen})
	t.Logf("honest body: %d bytes", len(body))
	req, _ := http.NewRequest("POST", s.URL+"v1/watchers/login", &pacedReader{data: body, rate: 256 << 10})
	req.ContentLength = int64(len(body))
	req.Header.Set("User-Agent", watcherUA)
	hc := &http.Client{Timeout: 30 * time.Second}
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("paced honest login: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("paced honest login: status %d", resp.StatusCode)
	}
	el = time.Since(t0)
	t.Logf("honest paced upload accepted after %v", el.Round(time.Millisecond))
	if el < 2*time.Second {
		t.Fatalf("the honest upload took only %v: it did not outlast the grace period", el)
	}
}

// pacedReader hands out data at rate bytes/s.
type pacedReader struct {
	data  []byte
	off   int
	rate  int
	start time.Time
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	if p.off >= len(p.data) {
		return 0, io.EOF
	}
	chunk := min(len(b), len(p.data)-p.off, p.rate/10)
	// wait until the chunk is due
	due := p.start.Add(time.Duration(float64(p.off+chunk) / float64(p.rate) * float64(time.Second)))
	time.Sleep(time.Until(due))
	n := copy(b, p.data[p.off:p.off+chunk])
	p.off += n
	return n, nil
}

func TestAnonConnectionCapKeepsHealth(t *testing.T) {
	metricsAddr := freeLoopbackAddr(t)
	s := StartServer(t, func(s *Server) {
		s.ExtraArgs = append(s.ExtraArgs, "--max-connections-per-ip", "20", "--metrics-listen", metricsAddr)
	})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// 20 idle connections from one address take its whole share
	for range 20 {
		c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	// the 21st is closed at once
	waitFor(t, 5*time.Second, "a connection over the per-address cap is closed", func() (bool, string) {
		c, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
		if err != nil {
			return false, err.Error()
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if err == io.EOF || (err != nil && strings.Contains(err.Error(), "reset")) {
			return true, ""
		}
		return false, fmt.Sprintf("read: %v", err)
	})
	// /health answers another address meanwhile
	r := mustAnonDo(t, anonClient("127.0.0.2"), "GET", s.URL+"health", nil, nil)
	if r.code != 200 || !strings.Contains(r.body, "up") {
		t.Fatalf("/health from 127.0.0.2 while 127.0.0.1 is at its cap: %d %q", r.code, r.body)
	}
	// the refusals are counted on the metrics listener, not on the API port
	m := mustAnonDo(t, anonClient("127.0.0.1"), "GET", "http://"+metricsAddr+"/metrics", nil, nil)
	if m.code != 200 || !strings.Contains(m.body, `halapi_connections_refused_total{reason="per_ip"}`) {
		t.Fatalf("metrics: %d, no per_ip refusal counted", m.code)
	}
	if r := mustAnonDo(t, anonClient("127.0.0.2"), "GET", s.URL+"metrics", nil, nil); r.code == 200 {
		t.Fatal("/metrics is served on the API port")
	}
	// releasing the held connections gives the address its share back
	for _, c := range held {
		c.Close()
	}
	held = nil
	waitFor(t, 5*time.Second, "/health from 127.0.0.1 after its connections closed", func() (bool, string) {
		r, err := anonDo(t, anonClient("127.0.0.1"), "GET", s.URL+"health", nil, nil)
		if err != nil {
			return false, err.Error()
		}
		return r.code == 200, fmt.Sprint(r.code)
	})
}

func TestAnonLoginBackoff(t *testing.T) {
	const (
		machine  = "backoff-agent"
		password = "backoff-agent-password-0123"
	)
	metricsAddr := freeLoopbackAddr(t)
	s := StartServer(t, func(s *Server) { s.ExtraArgs = append(s.ExtraArgs, "--metrics-listen", metricsAddr) })
	addMachine(t, s, machine, password)
	throttled := func() int {
		r := mustAnonDo(t, anonClient("127.0.0.1"), "GET", "http://"+metricsAddr+"/metrics", nil, nil)
		for _, line := range strings.Split(r.body, "\n") {
			if v, ok := strings.CutPrefix(line, `halapi_login_failures_total{reason="throttled"} `); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return 0
	}
	login := func(src, id, pw string) anonResp {
		return mustAnonDo(t, anonClient(src), "POST", s.URL+"v1/watchers/login", map[string]any{"machine_id": id, "password": pw}, nil)
	}

	// unknown machine and wrong password: one answer, one cost
	var tUnknown, tWrong time.Duration
	for i := range 4 {
		t0 := time.Now()
		a := login("127.0.0.3", fmt.Sprintf("nobody-%d", i), "guess")
		tUnknown += time.Since(t0)
		t0 = time.Now()
		b := login("127.0.0.3", machine, "guess")
		tWrong += time.Since(t0)
		if a.code != 401 || b.code != 401 || a.body != b.body {
			t.Fatalf("unknown machine %d %q vs wrong password %d %q: want the same 401", a.code, a.body, b.code, b.body)
		}
	}
	ratio := float64(tUnknown) / float64(tWrong)
	t.Logf("4 unknown-machine logins %v, 4 wrong-password logins %v (ratio %.2f)", tUnknown, tWrong, ratio)
	if ratio < 0.4 || ratio > 2.5 {
		t.Errorf("unknown machine vs wrong password cost ratio %.2f, want about 1", ratio)
	}

	// guessing from 127.0.0.2 is throttled: 429 with Retry-After
	var blocked anonResp
	for i := range 20 {
		r := login("127.0.0.2", machine, fmt.Sprint("guess-", i))
		if r.code == 429 {
			blocked = r
			break
		}
		if r.code != 401 {
			t.Fatalf("guess %d: status %d", i, r.code)
		}
	}
	if blocked.code != 429 {
		t.Fatal("20 wrong passwords from one address were never throttled")
	}
	ra, err := strconv.Atoi(blocked.hdr.Get("Retry-After"))
	if err != nil || ra < 1 || ra > 30 {
		t.Fatalf("Retry-After %q, want 1..30 s", blocked.hdr.Get("Retry-After"))
	}
	// failures are logged with machine and address, never the password
	waitFor(t, 5*time.Second, "failed logins in the server log", func() (bool, string) {
		data, _ := os.ReadFile(s.logPath)
		return bytes.Contains(data, []byte(`msg="login failed" machine=`+machine+" ip=127.0.0.2")), ""
	})
	if data, _ := os.ReadFile(s.logPath); bytes.Contains(data, []byte("guess-")) {
		t.Fatal("a guessed password is in the server log")
	}

	// the machine id is now blocked from addresses it never logged in from:
	// the real crowdsec client retries 429 (after ~20 s) and gets in
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before := throttled()
	w := newWatcher(t, s, machine, password)
	pw := strfmt.Password(password)
	id := machine
	t0 := time.Now()
	_, resp, err := w.Auth.AuthenticateWatcher(ctx, models.WatcherAuthRequest{MachineID: &id, Password: &pw, Scenarios: testScenarios})
	if err != nil || statusOf(resp) != 200 {
		t.Fatalf("legit login after the guesses: status %d, err %v", statusOf(resp), err)
	}
	t.Logf("legit login through apiclient took %v", time.Since(t0))
	if throttled() <= before {
		t.Fatal("the legit login was never throttled: the test did not exercise the client's 429 handling")
	}
	// and the guessing address gets in too once its block is over
	waitFor(t, 35*time.Second, "login from the throttled address after Retry-After", func() (bool, string) {
		r := login("127.0.0.2", machine, password)
		return r.code == 200, fmt.Sprint(r.code, r.hdr.Get("Retry-After"))
	})
}

func TestAnonTrustedProxyHeader(t *testing.T) {
	s := StartServer(t, func(s *Server) { s.ExtraArgs = append(s.ExtraArgs, "--trusted-proxies", "127.0.0.2") })
	reg := func(src, id string) {
		r := mustAnonDo(t, anonClient(src), "POST", s.URL+"v1/watchers", map[string]string{"machine_id": id, "password": "pw"},
			map[string]string{"X-Forwarded-For": "203.0.113.9, 127.0.0.2"})
		if r.code != 201 {
			t.Fatalf("register %s: %d %s", id, r.code, r.body)
		}
	}
	reg("127.0.0.2", "via-proxy")
	reg("127.0.0.3", "spoofer")
	ms := listedMachines(t, s)
	if ip := ms["via-proxy"]["ip_address"]; ip != "203.0.113.9" {
		t.Errorf("through the trusted proxy: ip %v, want 203.0.113.9", ip)
	}
	if ip := ms["spoofer"]["ip_address"]; ip != "127.0.0.3" {
		t.Errorf("from an untrusted peer with a forged header: ip %v, want the peer 127.0.0.3", ip)
	}
}

// TestSecretFilesPrivate: raft's log and snapshots (JWT key, CA keys,
// password hashes), the node key and a credentials file are 0600 — also a
// credentials file that existed before, and snapshots an older version
// left readable.
func TestSecretFilesPrivate(t *testing.T) {
	s := StartServer(t)
	s.MustCLI("machines", "add", "perm-agent", "--password", "perm-agent-password-0123")
	s.MustCLI("cluster", "snapshot")

	creds := filepath.Join(t.TempDir(), "local_api_credentials.yaml")
	if err := os.WriteFile(creds, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(creds, 0o644); err != nil {
		t.Fatal(err)
	}
	s.MustCLI("machines", "add", "perm-agent-2", "--password", "perm-agent-password-4567", "-f", creds)

	private := func() []string {
		var loose []string
		_ = filepath.WalkDir(s.DataDir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.Type()&fs.ModeSocket != 0 || strings.HasSuffix(p, ".crt") {
				return nil
			}
			if fi, err := d.Info(); err == nil && fi.Mode().Perm()&0o077 != 0 {
				loose = append(loose, fmt.Sprintf("%s %v", p, fi.Mode().Perm()))
			}
			return nil
		})
		if fi, err := os.Stat(creds); err != nil || fi.Mode().Perm() != 0o600 {
			loose = append(loose, fmt.Sprintf("%s %v", creds, fi.Mode().Perm()))
		}
		return loose
	}
	var snaps []string
	_ = filepath.WalkDir(filepath.Join(s.DataDir, "raft", "snapshots"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			snaps = append(snaps, p)
		}
		return nil
	})
	if len(snaps) == 0 {
		t.Fatal("no snapshot files after `cluster snapshot`")
	}
	if loose := private(); len(loose) > 0 {
		t.Fatalf("files readable by others: %v", loose)
	}
	// what an older version left readable is narrowed at the next start
	s.Stop()
	for _, p := range append(snaps, s.DataDir, filepath.Join(s.DataDir, "raft", "raft.db")) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.Start()
	if loose := private(); len(loose) > 0 {
		t.Fatalf("after a restart, files readable by others: %v", loose)
	}
}

// countingReader yields an endless JSON string body, counting what was
// read from it, up to limit bytes.
type countingReader struct {
	mu    sync.Mutex
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= c.limit {
		return 0, io.EOF
	}
	k := int64(len(p))
	if k > c.limit-c.n {
		k = c.limit - c.n
	}
	for i := range k {
		p[i] = 'x'
	}
	c.n += k
	return int(k), nil
}

func (c *countingReader) count() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestAnonStepCABodyBounded: the step-CA routes outside /v1 (anonymous:
// the one-time token is inside the body) stop reading a body after 1 MiB
// instead of buffering all of it.
func TestAnonStepCABodyBounded(t *testing.T) {
	s := StartServer(t)
	waitFor(t, 15*time.Second, "the cluster CA answers /roots", func() (bool, string) {
		r, err := anonDo(t, anonClient("127.0.0.1"), "GET", s.URL+"roots", nil, nil)
		if err != nil {
			return false, err.Error()
		}
		return r.code >= 200 && r.code < 300, fmt.Sprint(r.code, " ", r.body)
	})
	const total = 200 << 20
	body := &countingReader{limit: total}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", s.URL+"sign", io.MultiReader(strings.NewReader(`{"ott":"x","csr":"`), body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{}).Do(req)
	status := 0
	if err == nil {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		status = resp.StatusCode
		t.Logf("/sign answered %d %s", status, msg)
		if status < 400 {
			t.Fatalf("200 MB body to /sign: status %d", status)
		}
	}
	if n := body.count(); n > 32<<20 {
		t.Fatalf("the server read %d MiB of a /sign body before refusing it, want a bound of about 1 MiB", n>>20)
	}
	t.Logf("/sign: %v, %d MiB sent before the server stopped reading", err, body.count()>>20)
}
