package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/halapi/halapi/internal/testharness"
)

const (
	healthTimeout = 30 * time.Second
	cliTimeout    = 30 * time.Second
	loginTimeout  = 30 * time.Second
	stopTimeout   = 10 * time.Second
	pollInterval  = 50 * time.Millisecond

	// watcherUA is what a crowdsec agent sends; the LAPI wants exactly one '/'.
	watcherUA = "crowdsec/v1.7.6-bench-linux"
	// bouncerUA is what the bouncer side of the benchmark sends.
	bouncerUA = "halapi-bench/v0.0.1"
)

// serverKind is how every halapi process of a run is started.
type serverKind struct {
	bin string
	// https: serve the LAPI with halapi's built-in CA (its default);
	// otherwise plain HTTP, with --plain-http when the binary has it.
	https     bool
	plainFlag bool
	// metricsFlag: the binary has --metrics-listen (/metrics is then given
	// its own port; newer binaries no longer serve it on the API port).
	metricsFlag bool
}

// server is one halapi process on a loopback port with its own data dir.
type server struct {
	name    string
	bin     string
	dir     string // this server's scratch dir (data dir and log inside)
	dataDir string
	logPath string
	addr    string // host:port
	url     string // http(s)://host:port (no trailing slash)
	// metricsURL is where /metrics is served (no trailing slash).
	metricsURL string
	// tls trusts the node's CA (nil for plain HTTP).
	tls *tls.Config

	proc *testharness.Process
}

// newServer prepares a server of binary bin named name in dir (data dir
// and log inside), listening on addr (plain HTTP until the caller says).
func newServer(bin, dir, name, addr string) (*server, error) {
	s := &server{name: name, bin: bin, dir: dir, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "halapi.log"),
		addr: addr, url: "http://" + addr}
	s.metricsURL = s.url
	s.proc = &testharness.Process{Bin: bin, LogPath: s.logPath}
	return s, os.MkdirAll(s.dataDir, 0o700)
}

// startServer starts `halapi serve` in a fresh data dir under parent and
// waits for GET /health to answer 200.
func startServer(ctx context.Context, kind serverKind, parent, name string, extra ...string) (*server, error) {
	addr, err := testharness.FreeAddr()
	if err != nil {
		return nil, err
	}
	s, err := newServer(kind.bin, filepath.Join(parent, name), name, addr)
	if err != nil {
		return nil, err
	}
	args := []string{"serve", "--data-dir", s.dataDir, "--listen", s.addr, "--log-level", "warn"}
	switch {
	case kind.https:
		s.url = "https://" + addr
	case kind.plainFlag:
		args = append(args, "--plain-http")
	}
	s.metricsURL = s.url
	if kind.metricsFlag {
		if args, err = s.withMetrics(args); err != nil {
			return nil, err
		}
	}
	if err := s.proc.Start(append(args, extra...)...); err != nil {
		return nil, err
	}
	if err := s.waitHealthy(ctx); err != nil {
		s.stop()
		return nil, fmt.Errorf("server %s: %w%s", name, err, s.logTail())
	}
	if err := s.waitWritable(ctx); err != nil {
		s.stop()
		return nil, fmt.Errorf("server %s: %w%s", name, err, s.logTail())
	}
	return s, nil
}

// withMetrics gives the server its own /metrics port (--metrics-listen).
func (s *server) withMetrics(args []string) ([]string, error) {
	maddr, err := testharness.FreeAddr()
	if err != nil {
		return nil, err
	}
	s.metricsURL = "http://" + maddr
	return append(args, "--metrics-listen", maddr), nil
}

func (s *server) pid() int { return s.proc.Pid() }

func (s *server) running() bool { return s.proc.Running() }

// waitHealthy polls GET /health until it answers 200 {"status":"up"} or the
// deadline passes. Over HTTPS it first waits for the node's CA
// certificate (DATA/pki/ca.crt) and trusts it.
func (s *server) waitHealthy(ctx context.Context) error {
	var tlsConfig func() (*tls.Config, error)
	if strings.HasPrefix(s.url, "https:") {
		tlsConfig = func() (*tls.Config, error) {
			if s.tls == nil {
				if err := s.loadCA(); err != nil {
					return nil, err
				}
			}
			return s.tls, nil
		}
	}
	return testharness.WaitHealthy(ctx, s.proc, s.url+"/health", tlsConfig, healthTimeout)
}

// waitWritable polls `halapi cluster status -o json` until the node leads
// and has applied its whole log (on a fresh data dir that includes the
// cluster secrets written on first leadership): /health may answer before
// the node accepts writes.
func (s *server) waitWritable(ctx context.Context) error {
	deadline := time.Now().Add(healthTimeout)
	for {
		out, err := s.cli(ctx, "cluster", "status", "-o", "json")
		last := ""
		if err != nil {
			last = err.Error()
		} else if ok, why := writable([]byte(out)); ok {
			return nil
		} else {
			last = why
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not writable within %s (last cluster status: %s)", healthTimeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.proc.Done():
			return fmt.Errorf("halapi exited: %v", s.proc.Exit())
		case <-time.After(pollInterval):
		}
	}
}

// writable reads a `cluster status -o json` answer: leader known, this node
// leading, whole log applied. Index fields may be numbers or strings.
func writable(out []byte) (bool, string) {
	var st map[string]json.RawMessage
	if err := json.Unmarshal(out, &st); err != nil {
		return false, fmt.Sprintf("%v: %s", err, out)
	}
	field := func(k string) string {
		v := st[k]
		var str string
		if json.Unmarshal(v, &str) == nil {
			return str
		}
		return string(v)
	}
	if !strings.EqualFold(field("state"), "leader") || field("leader") == "" {
		return false, string(out)
	}
	if a, l := field("applied_index"), field("last_log_index"); a != l {
		return false, string(out)
	}
	return true, ""
}

// loadCA trusts the node's CA certificate once it is on disk.
func (s *server) loadCA() error {
	pem, err := os.ReadFile(filepath.Join(s.dataDir, "pki", "ca.crt"))
	if err != nil {
		return fmt.Errorf("no CA certificate yet: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("no certificate in pki/ca.crt")
	}
	s.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return nil
}

// client returns a client for this server (trusting its CA over HTTPS).
func (s *server) client(conns int, timeout time.Duration) *http.Client {
	return newClient(conns, timeout, s.tls)
}

// stop sends SIGTERM, then SIGKILL if the process is still there after
// stopTimeout. Safe to call more than once.
func (s *server) stop() { _ = s.proc.Stop(stopTimeout) }

// logTail returns the end of the server's output, for error messages.
func (s *server) logTail() string {
	if tail := s.proc.LogTail(4 << 10); tail != "" {
		return "\n--- halapi output (" + s.name + ") ---\n" + tail
	}
	return ""
}

// cliWrite is cli for an admin write: it is retried while the node
// reports that it has no leader yet.
func (s *server) cliWrite(ctx context.Context, args ...string) (string, error) {
	deadline := time.Now().Add(cliTimeout)
	for {
		out, err := s.cli(ctx, args...)
		if err == nil || !strings.Contains(err.Error(), "leader") || time.Now().After(deadline) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// cli runs an admin command against this server's data dir.
func (s *server) cli(ctx context.Context, args ...string) (string, error) {
	return testharness.CLI(ctx, cliTimeout, s.bin, s.dataDir, args...)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// addBouncer creates a bouncer and returns its API key.
func (s *server) addBouncer(ctx context.Context, name string) (string, error) {
	key := randomHex(16)
	if _, err := s.cliWrite(ctx, "bouncers", "add", name, "--key", key); err != nil {
		return "", err
	}
	return key, nil
}

// addMachine creates a validated machine and logs it in; it returns the JWT.
func (s *server) addMachine(ctx context.Context, name string) (string, error) {
	password := randomHex(16)
	if _, err := s.cliWrite(ctx, "machines", "add", name, "--password", password); err != nil {
		return "", err
	}
	return s.login(ctx, name, password, []string{})
}

// login logs a machine in with POST /v1/watchers/login (announcing its
// scenarios, as an agent does) and returns the JWT.
func (s *server) login(ctx context.Context, name, password string, scenarios []string) (string, error) {
	body, _ := json.Marshal(map[string]any{"machine_id": name, "password": password, "scenarios": scenarios})
	client := s.client(1, 10*time.Second)
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(loginTimeout)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/watchers/login", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", watcherUA)
		resp, err := client.Do(req)
		var last string
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				var out struct {
					Token string `json:"token"`
				}
				if err := json.Unmarshal(b, &out); err != nil || out.Token == "" {
					return "", fmt.Errorf("login: unexpected answer %q", b)
				}
				return out.Token, nil
			}
			last = fmt.Sprintf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("login as %s: %s", name, last)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// memInfo is what /proc/<pid>/status says about a process's memory.
type memInfo struct {
	RSS     int64 // VmRSS, bytes
	HWM     int64 // VmHWM (peak RSS), bytes
	RSSAnon int64 // RssAnon: heap, stacks (bytes)
	RSSFile int64 // RssFile: mapped files (the bolt raft log), binary text
}

func readMem(pid int) (memInfo, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{}, err
	}
	defer f.Close()
	var m memInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		var dst *int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			dst = &m.RSS
		case strings.HasPrefix(line, "VmHWM:"):
			dst = &m.HWM
		case strings.HasPrefix(line, "RssAnon:"):
			dst = &m.RSSAnon
		case strings.HasPrefix(line, "RssFile:"):
			dst = &m.RSSFile
		default:
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parse %q: %w", line, err)
		}
		*dst = kb << 10
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	if m.RSS == 0 {
		return m, errors.New("no VmRSS in /proc status")
	}
	return m, nil
}

// clockTicks is USER_HZ, 100 on every Linux platform Go supports.
const clockTicks = 100

// cpuTime returns the user+system CPU time a process has used so far
// (all threads), from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields restart after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// goMem is the Go runtime's view of the server's memory, from the
// go_memstats_* gauges of its own /metrics.
type goMem struct {
	HeapAlloc, HeapInuse, HeapIdle, HeapReleased, NextGC, Sys float64 // bytes
}

func (s *server) goMem(ctx context.Context) (goMem, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.metricsURL+"/metrics", nil)
	if err != nil {
		return goMem{}, err
	}
	client := s.client(1, 10*time.Second)
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return goMem{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return goMem{}, fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	var g goMem
	fields := map[string]*float64{
		"go_memstats_heap_alloc_bytes":    &g.HeapAlloc,
		"go_memstats_heap_inuse_bytes":    &g.HeapInuse,
		"go_memstats_heap_idle_bytes":     &g.HeapIdle,
		"go_memstats_heap_released_bytes": &g.HeapReleased,
		"go_memstats_next_gc_bytes":       &g.NextGC,
		"go_memstats_sys_bytes":           &g.Sys,
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	found := 0
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if dst, hit := fields[name]; ok && hit {
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				*dst = v
				found++
			}
		}
	}
	if err := sc.Err(); err != nil {
		return g, err
	}
	if found == 0 {
		return g, errors.New("no go_memstats_* gauges in /metrics")
	}
	return g, nil
}

// describeMem is a one-line breakdown of a server's memory.
func describeMem(m memInfo, g goMem, gerr error) string {
	out := fmt.Sprintf("RSS %.0f MiB (anon %.0f, file %.0f)", mib(m.RSS), mib(m.RSSAnon), mib(m.RSSFile))
	if gerr != nil {
		return out
	}
	return out + fmt.Sprintf("; Go heap: alloc %.0f MiB, in use %.0f, idle %.0f (released %.0f), next GC at %.0f, runtime total %.0f",
		g.HeapAlloc/(1<<20), g.HeapInuse/(1<<20), g.HeapIdle/(1<<20), g.HeapReleased/(1<<20), g.NextGC/(1<<20), g.Sys/(1<<20))
}

// machineBusy returns the CPU time all CPUs spent running processes (user,
// nice, system) or stolen by the hypervisor, from /proc/stat. Interrupt and
// softirq time is left out: loopback traffic of the benchmark itself lands
// there and is attributed to no process.
func machineBusy() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, errors.New("empty /proc/stat")
	}
	// cpu user nice system idle iowait irq softirq steal ...
	fields := strings.Fields(sc.Text())
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat line %q", sc.Text())
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 8} {
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks, nil
}
