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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
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

	args []string // command line of the running process (without the binary)
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	exit error         // cmd.Wait result, valid once done is closed
}

// startServer starts `halapi serve` in a fresh data dir under parent and
// waits for GET /health to answer 200.
func startServer(ctx context.Context, kind serverKind, parent, name string, extra ...string) (*server, error) {
	bin := kind.bin
	dir := filepath.Join(parent, name)
	s := &server{name: name, bin: bin, dir: dir, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "halapi.log")}
	if err := os.MkdirAll(s.dataDir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	s.addr = addr
	s.url = "http://" + addr
	args := []string{"serve", "--data-dir", s.dataDir, "--listen", s.addr, "--log-level", "warn"}
	switch {
	case kind.https:
		s.url = "https://" + addr
	case kind.plainFlag:
		args = append(args, "--plain-http")
	}
	s.metricsURL = s.url
	if kind.metricsFlag {
		maddr, err := freeLoopbackAddr()
		if err != nil {
			return nil, err
		}
		args = append(args, "--metrics-listen", maddr)
		s.metricsURL = "http://" + maddr
	}
	args = append(args, extra...)
	if err := s.spawn(args); err != nil {
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

// spawn starts `halapi ARGS` with its output appended to the server's log
// (also to start a killed node again with the same command line).
func (s *server) spawn(args []string) error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== halapi-bench: %s %s\n", s.bin, strings.Join(args, " "))

	cmd := exec.Command(s.bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	s.args, s.cmd, s.done = args, cmd, done
	go func() {
		s.exit = cmd.Wait()
		close(done)
	}()
	return nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) running() bool {
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// waitHealthy polls GET /health until it answers 200 or the deadline passes.
// Over HTTPS it first waits for the node's CA certificate (DATA/pki/ca.crt)
// and trusts it.
func (s *server) waitHealthy(ctx context.Context) error {
	deadline := time.NewTimer(healthTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	last := "no answer yet"
	var client *http.Client
	for {
		if client == nil && strings.HasPrefix(s.url, "https:") {
			if err := s.loadCA(); err != nil {
				last = err.Error()
			}
		}
		if client == nil && (s.tls != nil || !strings.HasPrefix(s.url, "https:")) {
			client = newClient(1, time.Second, s.tls)
			defer client.CloseIdleConnections()
		}
		if client == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.done:
				return fmt.Errorf("halapi exited before becoming healthy: %v", s.exit)
			case <-deadline.C:
				return fmt.Errorf("not healthy within %s (%s)", healthTimeout, last)
			case <-tick.C:
			}
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/health", nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = "status " + resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("halapi exited before becoming healthy: %v", s.exit)
		case <-deadline.C:
			return fmt.Errorf("not healthy within %s (last /health: %s)", healthTimeout, last)
		case <-tick.C:
		}
	}
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
		case <-s.done:
			return fmt.Errorf("halapi exited: %v", s.exit)
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
func (s *server) stop() {
	if !s.running() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		return
	case <-time.After(stopTimeout):
	}
	_ = s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
	}
}

// logTail returns the end of the server's output, for error messages.
func (s *server) logTail() string {
	const maxBytes = 4 << 10
	data, err := os.ReadFile(s.logPath)
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	if len(data) > maxBytes {
		data = data[len(data)-maxBytes:]
	}
	return "\n--- halapi output (" + s.name + ") ---\n" + string(data)
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
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	full := append(append([]string{}, args...), "--data-dir", s.dataDir)
	cmd := exec.CommandContext(ctx, s.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("halapi %s: %w\n%s%s", strings.Join(full, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
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
