package testharness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMain makes this test binary its own helper process: with
// HARNESS_HELPER set it behaves as the program the tests start.
func TestMain(m *testing.M) {
	switch os.Getenv("HARNESS_HELPER") {
	case "":
		os.Exit(m.Run())
	case "sleep": // runs until signalled, says so on its output
		fmt.Println("helper up", strings.Join(os.Args[1:], " "))
		time.Sleep(time.Hour)
	case "exit3":
		fmt.Fprintln(os.Stderr, "helper failing")
		os.Exit(3)
	}
}

func helper(t *testing.T, mode string) *Process {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HARNESS_HELPER", mode) // inherited by the child
	p := &Process{Bin: exe, LogPath: filepath.Join(t.TempDir(), "out.log")}
	t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
	return p
}

// The allocator hands out distinct ports, each one bindable at the time
// (for UDP too when asked), even when the kernel would give back a port
// just released.
func TestPortsNeverRepeat(t *testing.T) {
	p := NewPorts()
	seen := map[int]bool{}
	for i := range 300 {
		udp := i%3 == 0
		port, err := p.Port("127.0.0.1", udp)
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		if p.hi != 0 && (port < p.lo || port >= p.hi) {
			t.Fatalf("port %d outside [%d, %d)", port, p.lo, p.hi)
		}
		if err := bindable(net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), udp); err != nil {
			t.Fatalf("port %d handed out but not free: %v", port, err)
		}
	}
}

// A port in use is skipped; a UDP port in use is skipped for gossip.
func TestPortsSkipBusy(t *testing.T) {
	p := newPorts(20000, 30000)
	start := p.next
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(start)))
	if err != nil {
		t.Skipf("port %d busy already: %v", start, err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(start+1)))
	if err != nil {
		t.Skipf("udp port %d busy already: %v", start+1, err)
	}
	defer u.Close()
	got, err := p.Port("127.0.0.1", true)
	if err != nil {
		t.Fatal(err)
	}
	if got == start || got == start+1 {
		t.Fatalf("got busy port %d (tcp %d and udp %d are taken)", got, start, start+1)
	}
}

// Where the ephemeral range leaves no room below it, the kernel picks.
func TestPortsKernelFallback(t *testing.T) {
	p := newPorts(10000, 10500)
	if p.hi != 0 {
		t.Fatalf("range [%d, %d) used though it leaves no room", p.lo, p.hi)
	}
	seen := map[int]bool{}
	for range 100 {
		port, err := p.Port("127.0.0.1", false)
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] || port == 0 {
			t.Fatalf("kernel fallback: port %d handed out twice", port)
		}
		seen[port] = true
	}
}

func TestProcessStartStopRestart(t *testing.T) {
	p := helper(t, "sleep")
	if err := p.Start("a", "b"); err != nil {
		t.Fatal(err)
	}
	if !p.Running() {
		t.Fatal("not running after Start")
	}
	if err := p.Start("again"); err == nil {
		t.Fatal("second Start of a running process accepted")
	}
	if err := Poll(context.Background(), 10*time.Second, func() (bool, string) {
		tail := p.LogTail(1 << 10)
		return strings.Contains(tail, "helper up a b"), tail
	}); err != nil {
		t.Fatalf("helper output: %v", err)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Fatal("running after Stop")
	}
	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Args(), " "); got != "a b" {
		t.Fatalf("restart args %q", got)
	}
	if err := p.Kill(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Kill")
	}
	if p.Exit() == nil {
		t.Fatal("a killed process exited cleanly")
	}
	log := p.LogTail(1 << 20)
	for _, want := range []string{"start #1", "start #2", "SIGKILL"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if err := p.Kill(time.Second); err == nil {
		t.Error("Kill of a dead process accepted")
	}
}

func TestWaitHealthy(t *testing.T) {
	var body atomic.Value
	body.Store(`{"status":"starting"}`)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, body.Load())
	}))
	defer ts.Close()
	p := helper(t, "sleep")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	err := WaitHealthy(context.Background(), p, ts.URL+"/health", nil, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "not healthy within") || !strings.Contains(err.Error(), "starting") {
		t.Fatalf("a server answering %s: %v", body.Load(), err)
	}
	body.Store(`{"status":"up"}`)
	if err := WaitHealthy(context.Background(), p, ts.URL+"/health", nil, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestWaitHealthyProcessExited(t *testing.T) {
	p := helper(t, "exit3")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	err = WaitHealthy(context.Background(), p, "http://"+addr+"/health", nil, 20*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited before becoming healthy") {
		t.Fatalf("exited process: %v", err)
	}
}

func TestPollTimeout(t *testing.T) {
	err := Poll(context.Background(), 100*time.Millisecond, func() (bool, string) { return false, "still no" })
	var te *TimeoutError
	if !errors.As(err, &te) || te.Last != "still no" {
		t.Fatalf("Poll: %v", err)
	}
	n := 0
	if err := Poll(context.Background(), 5*time.Second, func() (bool, string) { n++; return n == 3, "" }); err != nil || n != 3 {
		t.Fatalf("Poll: %v after %d calls", err, n)
	}
}

func TestCLI(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HARNESS_HELPER", "exit3")
	_, err = CLI(context.Background(), 10*time.Second, exe, "/data", "machines", "list")
	if err == nil || !strings.Contains(err.Error(), "machines list --data-dir /data") || !strings.Contains(err.Error(), "helper failing") {
		t.Fatalf("CLI error: %v", err)
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "halapi")); err != nil {
		t.Fatalf("root %s: %v", root, err)
	}
}

func TestSumSamples(t *testing.T) {
	text := `# HELP halapi_raft_entries_total entries
# TYPE halapi_raft_entries_total counter
halapi_raft_entries_total{command="touch"} 3
halapi_raft_entries_total{command="decisions"} 40
halapi_raft_entries_total_extra{command="touch"} 1000
halapi_raft_entries_total{command="touch",node="b"} 2.5
other 7
`
	for _, c := range []struct {
		match string
		want  float64
	}{{`command="touch"`, 5.5}, {"", 45.5}, {`command="none"`, 0}} {
		got, err := SumSamples(strings.NewReader(text), "halapi_raft_entries_total", c.match)
		if err != nil || got != c.want {
			t.Errorf("match %q: %v, %v; want %v", c.match, got, err, c.want)
		}
	}
	if _, err := SumSamples(strings.NewReader("m{a=\"b\"} x\n"), "m", ""); err == nil {
		t.Error("a sample that is no number accepted")
	}
}
