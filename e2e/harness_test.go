package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"
	log "github.com/sirupsen/logrus"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"

	"github.com/halapi/halapi/internal/testharness"
)

const (
	// healthTimeout bounds the wait for GET /health after a (re)start.
	healthTimeout = 15 * time.Second
	// callTimeout is the context deadline of every client call.
	callTimeout = 15 * time.Second
	// callGrace is how long past callTimeout a call may still run before the
	// test gives up on it (the JWT transport sleeps between retries without
	// looking at the context).
	callGrace = 5 * time.Second
	// cliTimeout bounds every admin command.
	cliTimeout = 20 * time.Second
	// stopTimeout bounds the wait for the process to exit after a signal.
	stopTimeout = 10 * time.Second
	// pollInterval is the period of every condition poll.
	pollInterval = testharness.PollInterval

	// watcherUA is the User-Agent the crowdsec agent and cscli send.
	watcherUA = "crowdsec/v1.7.6-test-linux"
)

// halapiBin is the path of the binary under test, set by TestMain.
var halapiBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// The client libraries log through logrus; keep retries and errors
	// visible but drop the per-request info lines.
	log.SetLevel(log.WarnLevel)

	if bin := os.Getenv("HALAPI_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: HALAPI_BIN: %v\n", err)
			return 2
		}
		if _, err := os.Stat(abs); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: HALAPI_BIN: %v\n", err)
			return 2
		}
		halapiBin = abs
		return m.Run()
	}

	dir, err := os.MkdirTemp("", "halapi-e2e-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 2
	}
	defer os.RemoveAll(dir)

	root, err := testharness.RepoRoot("..")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 2
	}
	bin, err := testharness.BuildHalapi(context.Background(), root, dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 2
	}
	halapiBin = bin

	return m.Run()
}

// Server is one halapi process on a loopback port with its own data dir.
type Server struct {
	t        testing.TB
	DataDir  string
	Addr     string // host:port
	URL      string // http://host:port/ (trailing slash, as the clients want it)
	Profiles string // optional --profiles file
	// ExtraArgs are appended to the serve command line (cluster flags).
	ExtraArgs []string
	// TLS, when set, starts the server without --plain-http (HTTPS API
	// with the built-in PKI's node certificate) and polls /health with the
	// client configuration it returns; an error means "not yet" (e.g. the
	// CA certificate is not on disk yet). URL must then be https://.
	TLS     func() (*tls.Config, error)
	logPath string

	proc *testharness.Process
}

// ServerOption tunes a server before its first start.
type ServerOption func(*Server)

// WithProfiles starts the server with --profiles pointing at a file holding
// the given YAML.
func WithProfiles(yaml string) ServerOption {
	return func(s *Server) {
		p := filepath.Join(s.t.TempDir(), "profiles.yaml")
		if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
			s.t.Fatalf("write profiles: %v", err)
		}
		s.Profiles = p
	}
}

// StartServer starts halapi on a free loopback port with a fresh data dir and
// waits until it answers /health. The process is stopped when the test ends;
// if the test failed, the server's output is printed.
func StartServer(t testing.TB, opts ...ServerOption) *Server {
	t.Helper()

	s := NewServer(t, opts...)
	s.Start()

	return s
}

// NewServer prepares a server (data dir, loopback port, options) without
// starting it; it is stopped when the test ends and its output printed if
// the test failed.
func NewServer(t testing.TB, opts ...ServerOption) *Server {
	t.Helper()

	base := t.TempDir()
	s := &Server{
		t:       t,
		DataDir: filepath.Join(base, "data"),
		logPath: filepath.Join(base, "halapi.log"),
	}
	s.proc = &testharness.Process{LogPath: s.logPath}
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		t.Fatalf("mkdir data dir: %v", err)
	}

	s.Addr = freeLoopbackAddr(t)
	s.URL = "http://" + s.Addr + "/"

	for _, o := range opts {
		o(s)
	}

	// Registered after t.TempDir, so it runs before the temp dir is removed.
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.dumpLog()
		}
	})

	return s
}

func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortOn(t, "127.0.0.1", false)))
}

// freePortOn returns a port free on host for TCP (and UDP too with udp,
// for gossip) that no other server of this test binary got.
func freePortOn(t testing.TB, host string, udp bool) int {
	t.Helper()
	port, err := testharness.FreePortOn(host, udp)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// Start (re)starts the process on the same data dir and port and waits for
// /health.
func (s *Server) Start() {
	s.t.Helper()

	s.Launch()
	s.waitHealthy()
}

// Launch (re)starts the process on the same data dir and port without
// waiting for /health (cluster nodes only answer once their peers are up).
func (s *Server) Launch() {
	s.t.Helper()

	if s.running() {
		s.t.Fatalf("Start: server already running")
	}

	// Plain HTTP on loopback unless the test asked for TLS (pki_test.go).
	args := []string{"serve", "--data-dir", s.DataDir, "--listen", s.Addr}
	if s.TLS == nil {
		args = append(args, "--plain-http")
	}
	if s.Profiles != "" {
		args = append(args, "--profiles", s.Profiles)
	}
	args = append(args, s.ExtraArgs...)

	s.launch(nil, args)
}

// launch starts halapiBin (read now: a test may swap binaries between
// starts) with args and env.
func (s *Server) launch(env, args []string) {
	s.t.Helper()
	s.proc.Bin, s.proc.Env = halapiBin, env
	if err := s.proc.Start(args...); err != nil {
		s.t.Fatalf("start halapi: %v", err)
	}
}

func (s *Server) running() bool { return s.proc.Running() }

// waitHealthy polls GET /health until it answers 200 {"status":"up"}.
func (s *Server) waitHealthy() {
	s.t.Helper()

	if err := testharness.WaitHealthy(context.Background(), s.proc, s.URL+"health", s.TLS, healthTimeout); err != nil {
		s.t.Fatal(err)
	}
}

func httpGet(client *http.Client, u string) (int, []byte, error) {
	resp, err := client.Get(u)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))

	return resp.StatusCode, body, err
}

// Kill sends SIGKILL and waits for the process to be gone: a crash.
func (s *Server) Kill() {
	s.t.Helper()

	if err := s.proc.Kill(stopTimeout); err != nil {
		s.t.Fatalf("Kill: %v", err)
	}
}

// Stop asks the process to terminate (SIGTERM), then kills it if it is still
// there after stopTimeout. Safe to call when it is not running.
func (s *Server) Stop() {
	if err := s.proc.Stop(stopTimeout); err != nil {
		s.t.Errorf("halapi: %v", err)
	}
}

// Signal sends sig to the running process (SIGSTOP, SIGCONT).
func (s *Server) Signal(sig os.Signal) error { return s.proc.Signal(sig) }

// Pid is the process id of the running server.
func (s *Server) Pid() int { return s.proc.Pid() }

// dumpLog prints the end of the server's output into the test log.
func (s *Server) dumpLog() {
	s.t.Logf("halapi output (%s):\n%s", s.logPath, s.proc.LogTail(64<<10))
}

// CLI runs an admin command against this server's data dir and returns its
// standard output; the error includes standard error.
func (s *Server) CLI(args ...string) (string, error) {
	return testharness.CLI(context.Background(), cliTimeout, halapiBin, s.DataDir, args...)
}

// MustCLI is CLI that fails the test on error.
func (s *Server) MustCLI(args ...string) string {
	s.t.Helper()

	out, err := s.CLI(args...)
	if err != nil {
		s.t.Fatal(err)
	}

	return out
}

// listedObject parses the JSON array printed by `halapi <kind> list -o json`
// and returns the entry that has a top-level string field equal to name.
func (s *Server) listedObject(kind, name string) (map[string]any, bool) {
	s.t.Helper()

	out := s.MustCLI(kind, "list", "-o", "json")

	var items []map[string]any
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		s.t.Fatalf("halapi %s list -o json: not a JSON array of objects: %v\n%s", kind, err, out)
	}
	for _, it := range items {
		for _, v := range it {
			if str, ok := v.(string); ok && str == name {
				return it, true
			}
		}
	}

	return nil, false
}

// waitListed polls `halapi <kind> list -o json` until the entry for name
// satisfies pred (details such as last pull or version may be written
// lazily by the server, so they are polled, not read once).
func (s *Server) waitListed(kind, name, what string, pred func(obj map[string]any) bool) {
	s.t.Helper()

	waitFor(s.t, 10*time.Second, fmt.Sprintf("%s list: %s %s", kind, name, what), func() (bool, string) {
		obj, ok := s.listedObject(kind, name)
		if !ok {
			return false, "not listed"
		}
		return pred(obj), fmt.Sprintf("%v", obj)
	})
}

// fieldIs returns a predicate on a listed object: obj[key] == want (JSON
// values: string, bool, float64, nil).
func fieldIs(key string, want any) func(map[string]any) bool {
	return func(obj map[string]any) bool {
		v, ok := obj[key]
		return ok && v == want
	}
}

// fieldSet returns a predicate: obj[key] is present and not null/empty.
func fieldSet(key string) func(map[string]any) bool {
	return func(obj map[string]any) bool {
		v, ok := obj[key]
		return ok && v != nil && v != ""
	}
}

// ---------------------------------------------------------------------------
// Bounded client calls

// call runs f with a context deadline of callTimeout and gives up on it
// callGrace later even if f ignores its context, so a misbehaving server makes
// the test fail fast instead of hanging in client retry sleeps.
func call[T any](what string, f func(ctx context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()

	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := f(ctx)
		ch <- result{v, err}
	}()

	select {
	case r := <-ch:
		return r.v, r.err
	case <-time.After(callTimeout + callGrace):
		var zero T
		return zero, fmt.Errorf("%s: no answer within %s", what, callTimeout+callGrace)
	}
}

// mustCall is call that fails the test on error.
func mustCall[T any](t testing.TB, what string, f func(ctx context.Context) (T, error)) T {
	t.Helper()

	v, err := call(what, f)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}

	return v
}

// statusOf returns the HTTP status of a client response, 0 if there is none.
func statusOf(resp *apiclient.Response) int {
	if resp == nil || resp.Response == nil {
		return 0
	}
	return resp.Response.StatusCode
}

// waitFor polls cond every pollInterval until it returns true or timeout
// passes; on timeout the test fails with the last description cond gave.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()

	if err := testharness.Poll(context.Background(), timeout, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// ---------------------------------------------------------------------------
// Clients

var testScenarios = []string{"crowdsecurity/ssh-bf", "crowdsecurity/http-probing"}

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()

	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}

	return u
}

// registerWatcher does what `cscli lapi register` does: POST /v1/watchers
// through apiclient.RegisterClient (the machine is then pending).
func registerWatcher(t testing.TB, s *Server, machineID, password string) error {
	t.Helper()

	_, err := call("RegisterClient", func(ctx context.Context) (*apiclient.ApiClient, error) {
		return apiclient.RegisterClient(ctx, &apiclient.Config{
			MachineID:     machineID,
			Password:      strfmt.Password(password),
			URL:           mustURL(t, s.URL),
			VersionPrefix: "v1",
			UserAgent:     watcherUA,
		}, nil)
	})

	return err
}

// newWatcher builds the authenticated client the crowdsec agent and cscli
// use (JWT transport, login on first call).
func newWatcher(t testing.TB, s *Server, machineID, password string) *apiclient.ApiClient {
	t.Helper()

	return apiclient.NewClient(&apiclient.Config{
		MachineID:     machineID,
		Password:      strfmt.Password(password),
		URL:           mustURL(t, s.URL),
		VersionPrefix: "v1",
		UserAgent:     watcherUA,
		UpdateScenario: func(context.Context) ([]string, error) {
			return testScenarios, nil
		},
	})
}

// addMachine creates a validated machine with the admin CLI and returns a
// logged-in-on-demand client for it.
func addMachine(t testing.TB, s *Server, machineID, password string) *apiclient.ApiClient {
	t.Helper()

	s.MustCLI("machines", "add", machineID, "--password", password)

	return newWatcher(t, s, machineID, password)
}

// addBouncer creates a bouncer with a known API key with the admin CLI.
func addBouncer(t testing.TB, s *Server, name, key string) {
	t.Helper()

	s.MustCLI("bouncers", "add", name, "--key", key)
}

func newLiveBouncer(t testing.TB, s *Server, key string) *csbouncer.LiveBouncer {
	t.Helper()

	b := &csbouncer.LiveBouncer{
		APIKey:    key,
		APIUrl:    s.URL,
		UserAgent: "e2e-live-bouncer/v0.0.21",
	}
	if err := b.Init(); err != nil {
		t.Fatalf("LiveBouncer.Init: %v", err)
	}

	return b
}

// errContains reports whether err's text contains sub.
func errContains(err error, sub string) bool {
	return err != nil && strings.Contains(err.Error(), sub)
}

// apiErrorMessage returns the server's message of a client error, or the
// error text when it is not an API error.
func apiErrorMessage(err error) string {
	var apiErr *apiclient.ErrorResponse
	if errors.As(err, &apiErr) && apiErr.Message != nil {
		return *apiErr.Message
	}
	if err == nil {
		return ""
	}
	return err.Error()
}
