// Package agentbench measures what `halapi agent` costs a bouncer: a real
// node (halapi serve, plain HTTP) and a real agent in front of it, and the
// bouncer query GET /v1/decisions?ip=… with keep-alive, sent directly and
// through the agent in alternating rounds (cmd/halapi-agent-bench and the
// agent phase of cmd/halapi-bench).
//
// Three layouts:
//
//   - loopback: every process on loopback, scheduled anywhere (the agent,
//     the node and the client compete for the same CPUs);
//   - pinned: two hosts emulated on one machine: the node on the last CPU,
//     the client (this process) and the agent on the first
//     (sched_setaffinity), still over loopback;
//   - netns: pinned, and the node in its own network namespace behind a
//     veth pair (needs root and `ip`), so a real network stack hop lies
//     between the client's host and the node's, as deployed. No delay is
//     added (netem is not available): a LAN adds its round trip to both
//     figures alike.
//
// Two options apply to any layout: TLS (the node serves HTTPS with its
// built-in CA; the direct client and the agent speak TLS to it, as
// deployed: the bouncer's API key must not cross a network in clear) and
// Socket (a third mode: the client reaches the agent over its unix socket,
// `halapi agent run --socket`, instead of loopback TCP).
//
// Besides req/s and latency it reads the CPU time of each process per
// request (/proc/<pid>/stat, getrusage for the client).
package agentbench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/halapi/halapi/internal/testharness"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Layouts.
const (
	Loopback = "loopback"
	Pinned   = "pinned"
	Netns    = "netns"
)

// Options configure a run.
type Options struct {
	Bin       string        // halapi binary
	Layout    string        // Loopback, Pinned or Netns
	Rounds    int           // alternating rounds of each mode (median reported)
	Duration  time.Duration // one round
	Clients   []int         // concurrent keep-alive clients, one measurement each
	AgentArgs []string      // extra `halapi agent run` flags (e.g. --procs 2)
	TLS       bool          // the node serves HTTPS: direct and agent->node over TLS
	Socket    bool          // also measure client -> agent over the agent's unix socket
	Perf      bool          // also count syscalls, context switches and wake-ups per request of each process (perf stat; PerfAvailable)
	// PerfEvents are more perf events counted with Perf (e.g.
	// syscalls:sys_enter_read), reported per request in Counts.Extra.
	PerfEvents []string
	// BareRelay puts the bare relay (barerelay.go) where the agent was:
	// the running program must call ServeBareRelayIfAsked first.
	BareRelay bool
	Log       io.Writer // progress (nil: none)
}

// Figures are one mode's medians.
type Figures struct {
	RPS float64       `json:"rps"`
	P50 time.Duration `json:"p50"`
	P99 time.Duration `json:"p99"`
	// CPU time per request, microseconds, of each process.
	NodeCPU   float64 `json:"node_cpu_us"`
	AgentCPU  float64 `json:"agent_cpu_us"`
	ClientCPU float64 `json:"client_cpu_us"`
	// Kernel counters per request (Options.Perf).
	NodeCounts   *Counts `json:"node_counts,omitempty"`
	AgentCounts  *Counts `json:"agent_counts,omitempty"`
	ClientCounts *Counts `json:"client_counts,omitempty"`
}

// Result compares direct and through-the-agent for one client count.
type Result struct {
	Layout  string  `json:"layout"`
	TLS     bool    `json:"tls"`
	Clients int     `json:"clients"`
	Direct  Figures `json:"direct"`
	Agent   Figures `json:"agent"`
	// Socket: through the agent, the client on its unix socket.
	Socket *Figures `json:"socket,omitempty"`
	// RPSRatio is agent/direct req/s (median of the per-round ratios);
	// P50Ratio is direct p50 / agent p50 (1: no added latency).
	RPSRatio float64 `json:"rps_ratio"`
	P50Ratio float64 `json:"p50_ratio"`
	// The same for the socket mode.
	SocketRPSRatio float64 `json:"socket_rps_ratio,omitempty"`
	SocketP50Ratio float64 `json:"socket_p50_ratio,omitempty"`
}

// Name is the layout with its options, e.g. "netns" or "netns-tls".
func (r Result) Name() string {
	if r.TLS {
		return r.Layout + "-tls"
	}
	return r.Layout
}

// Available reports why a layout cannot run here ("" if it can).
func Available(layout string) string {
	switch layout {
	case Loopback:
		return ""
	case Pinned, Netns:
		if runtime.NumCPU() < 2 {
			return "needs 2 CPUs"
		}
		if layout == Netns {
			if os.Geteuid() != 0 {
				return "needs root (network namespaces)"
			}
			if _, err := exec.LookPath("ip"); err != nil {
				return "needs the ip command"
			}
		}
		return ""
	}
	return "unknown layout " + layout
}

const benchKey = "agent-bench-bouncer-key-0123456789abcdef"

// Run measures one layout.
func Run(ctx context.Context, o Options) ([]Result, error) {
	if why := Available(o.Layout); why != "" {
		return nil, fmt.Errorf("layout %s: %s", o.Layout, why)
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "agentbench: "+format+"\n", args...)
		}
	}
	dir, err := os.MkdirTemp("", "halapi-agent-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	last := runtime.NumCPU() - 1
	var nodeWrap, agentWrap []string
	nodeHost := "127.0.0.1"
	if o.Layout != Loopback {
		nodeWrap = []string{"taskset", "-c", strconv.Itoa(last)}
		agentWrap = []string{"taskset", "-c", "0"}
		restore, err := pinSelf(0)
		if err != nil {
			return nil, fmt.Errorf("pinning the client to CPU 0: %w", err)
		}
		defer restore()
	}
	if o.Layout == Netns {
		ns, host, cleanup, err := makeNetns()
		if err != nil {
			return nil, fmt.Errorf("network namespace: %w", err)
		}
		defer cleanup()
		nodeWrap = append([]string{"ip", "netns", "exec", ns}, nodeWrap...)
		nodeHost = host
	}

	api, err := freePort(nodeHost, o.Layout == Netns)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	nodeArgs := []string{"serve", "--data-dir", data, "--listen", api, "--metrics-listen", ""}
	scheme := "https"
	if !o.TLS {
		nodeArgs, scheme = append(nodeArgs, "--plain-http"), "http"
	}
	if o.Layout == Netns && !o.TLS {
		// the veth pair is this machine's own: nothing leaves it
		nodeArgs = append(nodeArgs, "--allow-plain-http-remote")
	}
	node, err := start(filepath.Join(dir, "node.log"), nodeWrap, o.Bin, nodeArgs...)
	if err != nil {
		return nil, err
	}
	defer node.stop()
	caPath := filepath.Join(data, "pki", "ca.crt")
	nodeTransport := func(clients int) *http.Transport {
		return &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	}
	if o.TLS {
		// the built-in CA writes its root when the node starts
		pool, err := waitCA(ctx, caPath, 30*time.Second)
		if err != nil {
			return nil, fmt.Errorf("node: %w (log %s)", err, tail(filepath.Join(dir, "node.log")))
		}
		// go-cs-bouncer's HTTPS transport: TLSClientConfig set, so HTTP/1.1
		nodeTransport = func(clients int) *http.Transport {
			return &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true,
				TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}}
		}
	}
	if err := waitOK(ctx, nodeTransport(1), scheme+"://"+api+"/health", 30*time.Second); err != nil {
		return nil, fmt.Errorf("node: %w (log %s)", err, tail(filepath.Join(dir, "node.log")))
	}
	cli := func(args ...string) error {
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(cctx, o.Bin, append(args, "--data-dir", data)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("halapi %v: %v: %s", args, err, out)
		}
		return nil
	}
	if err := cli("bouncers", "add", "bench", "--key", benchKey); err != nil {
		return nil, err
	}
	for i := range 20 {
		if err := cli("decisions", "add", "--ip", fmt.Sprintf("10.1.0.%d", 1+i), "-d", "4h"); err != nil {
			return nil, err
		}
	}
	listen, err := freePort("127.0.0.1", false)
	if err != nil {
		return nil, err
	}
	args := []string{"agent", "run", "--listen", listen, "--server", scheme + "://" + api + "/",
		"--metrics-listen", "", "--log-level", "warn"}
	if o.TLS {
		args = append(args, "--ca", caPath)
	}
	sock := filepath.Join(dir, "agent.sock")
	if o.Socket {
		args = append(args, "--socket", sock)
	}
	args = append(args, o.AgentArgs...)
	agentBin := o.Bin
	if o.BareRelay {
		if agentBin, err = os.Executable(); err != nil {
			return nil, err
		}
		so := ""
		if o.Socket {
			so = sock
		}
		args = bareRelayArgs(listen, so, scheme+"://"+api+"/", caPath)
	}
	ag, err := start(filepath.Join(dir, "agent.log"), agentWrap, agentBin, args...)
	if err != nil {
		return nil, err
	}
	defer ag.stop()
	plain := func(clients int) *http.Transport {
		return &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	}
	// what crowdsec's apiclient builds for a LAPI URL that is a path
	overSocket := func(clients int) *http.Transport {
		return &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}}
	}
	if err := waitOK(ctx, plain(1), "http://"+listen+"/health", 30*time.Second); err != nil {
		return nil, fmt.Errorf("agent: %w (log %s)", err, tail(filepath.Join(dir, "agent.log")))
	}
	if o.Socket {
		if err := waitOK(ctx, overSocket(1), "http://unix/health", 10*time.Second); err != nil {
			return nil, fmt.Errorf("agent socket: %w (log %s)", err, tail(filepath.Join(dir, "agent.log")))
		}
	}
	name := Result{Layout: o.Layout, TLS: o.TLS}.Name()
	logf("%s: node %s://%s (pid %d), agent %s (pid %d)", name, scheme, api, node.pid(), listen, ag.pid())

	pids := procs{node: node.pid(), agent: ag.pid(), perf: o.Perf, events: o.PerfEvents}
	if o.Perf {
		if why := PerfAvailable(); why != "" {
			return nil, fmt.Errorf("-perf: %s", why)
		}
	}
	var out []Result
	for _, clients := range o.Clients {
		var d, a, so []Figures
		var ratios, sratios []float64
		for range o.Rounds {
			fd, err := measure(ctx, scheme+"://"+api, nodeTransport(clients), clients, o.Duration, pids)
			if err != nil {
				return nil, fmt.Errorf("direct: %w", err)
			}
			fa, err := measure(ctx, "http://"+listen, plain(clients), clients, o.Duration, pids)
			if err != nil {
				return nil, fmt.Errorf("agent: %w", err)
			}
			d, a = append(d, fd), append(a, fa)
			ratios = append(ratios, fa.RPS/fd.RPS)
			if o.Socket {
				fs, err := measure(ctx, "http://unix", overSocket(clients), clients, o.Duration, pids)
				if err != nil {
					return nil, fmt.Errorf("agent socket: %w", err)
				}
				so, sratios = append(so, fs), append(sratios, fs.RPS/fd.RPS)
			}
		}
		r := Result{Layout: o.Layout, TLS: o.TLS, Clients: clients, Direct: median(d), Agent: median(a)}
		r.RPSRatio = medianOf(ratios)
		if r.Agent.P50 > 0 {
			r.P50Ratio = float64(r.Direct.P50) / float64(r.Agent.P50)
		}
		if o.Socket {
			m := median(so)
			r.Socket, r.SocketRPSRatio = &m, medianOf(sratios)
			if m.P50 > 0 {
				r.SocketP50Ratio = float64(r.Direct.P50) / float64(m.P50)
			}
		}
		logf("%s, %d client(s): direct %.0f req/s p50 %v, agent %.0f req/s p50 %v: %.2fx", name, clients,
			r.Direct.RPS, r.Direct.P50, r.Agent.RPS, r.Agent.P50, r.RPSRatio)
		if r.Socket != nil {
			logf("%s, %d client(s): agent over its socket %.0f req/s p50 %v: %.2fx", name, clients, r.Socket.RPS, r.Socket.P50, r.SocketRPSRatio)
		}
		out = append(out, r)
	}
	return out, nil
}

// Format prints results as a table.
func Format(w io.Writer, rs []Result) {
	for _, r := range rs {
		fmt.Fprintf(w, "%s, %d client(s), keep-alive GET /v1/decisions?ip=:\n", r.Name(), r.Clients)
		modes := []struct {
			name string
			f    Figures
		}{{"direct", r.Direct}, {"agent ", r.Agent}}
		if r.Socket != nil {
			modes = append(modes, struct {
				name string
				f    Figures
			}{"socket", *r.Socket})
		}
		for _, m := range modes {
			fmt.Fprintf(w, "  %s %8.0f req/s  p50 %-9v p99 %-9v  CPU/req: node %5.1f µs, agent %5.1f µs, client %5.1f µs\n",
				m.name, m.f.RPS, m.f.P50.Round(time.Microsecond), m.f.P99.Round(time.Microsecond), m.f.NodeCPU, m.f.AgentCPU, m.f.ClientCPU)
			if c := m.f.NodeCounts; c != nil {
				a, cl := m.f.AgentCounts, m.f.ClientCounts
				fmt.Fprintf(w, "         per request: syscalls node %.1f, agent %.1f, client %.1f; context switches %.1f / %.1f / %.1f; wake-ups %.1f / %.1f / %.1f\n",
					c.Syscalls, a.Syscalls, cl.Syscalls, c.Switches, a.Switches, cl.Switches, c.Wakeups, a.Wakeups, cl.Wakeups)
				for _, p := range []struct {
					name string
					c    *Counts
				}{{"node", c}, {"agent", a}, {"client", cl}} {
					if len(p.c.Extra) == 0 {
						continue
					}
					var parts []string
					for _, k := range slices.Sorted(maps.Keys(p.c.Extra)) {
						parts = append(parts, fmt.Sprintf("%s %.2f", strings.TrimPrefix(k, "syscalls:sys_enter_"), p.c.Extra[k]))
					}
					fmt.Fprintf(w, "         %s: %s\n", p.name, strings.Join(parts, ", "))
				}
			}
		}
		fmt.Fprintf(w, "  agent/direct: %.2fx req/s, p50 %.2fx (+%v)\n", r.RPSRatio, r.P50Ratio, (r.Agent.P50 - r.Direct.P50).Round(time.Microsecond))
		if r.Socket != nil {
			fmt.Fprintf(w, "  socket/direct: %.2fx req/s, p50 %.2fx (+%v)\n", r.SocketRPSRatio, r.SocketP50Ratio, (r.Socket.P50 - r.Direct.P50).Round(time.Microsecond))
		}
	}
}

type procs struct {
	node, agent int
	perf        bool
	events      []string
}

func median(fs []Figures) Figures {
	pick := func(get func(Figures) float64) float64 {
		v := make([]float64, len(fs))
		for i, f := range fs {
			v[i] = get(f)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var counts [3]*Counts
	if fs[0].NodeCounts != nil {
		for i, get := range []func(Figures) *Counts{
			func(f Figures) *Counts { return f.NodeCounts },
			func(f Figures) *Counts { return f.AgentCounts },
			func(f Figures) *Counts { return f.ClientCounts },
		} {
			counts[i] = &Counts{
				Syscalls: pick(func(f Figures) float64 { return get(f).Syscalls }),
				Switches: pick(func(f Figures) float64 { return get(f).Switches }),
				Wakeups:  pick(func(f Figures) float64 { return get(f).Wakeups }),
			}
			for k := range get(fs[0]).Extra {
				if counts[i].Extra == nil {
					counts[i].Extra = map[string]float64{}
				}
				counts[i].Extra[k] = pick(func(f Figures) float64 { return get(f).Extra[k] })
			}
		}
	}
	return Figures{
		NodeCounts: counts[0], AgentCounts: counts[1], ClientCounts: counts[2],
		RPS:       pick(func(f Figures) float64 { return f.RPS }),
		P50:       time.Duration(pick(func(f Figures) float64 { return float64(f.P50) })),
		P99:       time.Duration(pick(func(f Figures) float64 { return float64(f.P99) })),
		NodeCPU:   pick(func(f Figures) float64 { return f.NodeCPU }),
		AgentCPU:  pick(func(f Figures) float64 { return f.AgentCPU }),
		ClientCPU: pick(func(f Figures) float64 { return f.ClientCPU }),
	}
}

func medianOf(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func measure(ctx context.Context, base string, tr *http.Transport, clients int, dur time.Duration, p procs) (Figures, error) {
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	u := base + "/v1/decisions?ip=10.1.0.7"
	one := func() error { return bouncerQuery(ctx, c, u) }
	for range clients * 20 { // warm connections
		if err := one(); err != nil {
			return Figures{}, err
		}
	}
	var perf perfGroup
	if p.perf {
		g, err := startPerfGroup(p.events, p.node, p.agent, os.Getpid())
		if err != nil {
			return Figures{}, fmt.Errorf("perf: %w", err)
		}
		perf = g
		if err := perf.command("enable"); err != nil {
			perf.abort()
			return Figures{}, fmt.Errorf("perf: %w", err)
		}
	}
	n0, a0, c0 := cpuOf(p.node), cpuOf(p.agent), selfCPU()
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr error
	stopAt := time.Now().Add(dur)
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1<<14)
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				t0 := time.Now()
				if err := one(); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	var perfErr error
	var counts []Counts
	if perf != nil {
		perfErr = perf.command("disable")
		mu.Lock()
		n := float64(len(lat))
		mu.Unlock()
		c, err := perf.stop(max(n, 1))
		counts = c
		if perfErr == nil {
			perfErr = err
		}
	}
	if firstErr != nil {
		return Figures{}, firstErr
	}
	if len(lat) == 0 {
		return Figures{}, errors.New("no request completed")
	}
	n := float64(len(lat))
	f := Figures{RPS: n / dur.Seconds(),
		NodeCPU:   (cpuOf(p.node) - n0).Seconds() * 1e6 / n,
		AgentCPU:  (cpuOf(p.agent) - a0).Seconds() * 1e6 / n,
		ClientCPU: (selfCPU() - c0).Seconds() * 1e6 / n}
	if perf != nil {
		if perfErr != nil {
			return Figures{}, perfErr
		}
		f.NodeCounts, f.AgentCounts, f.ClientCounts = &counts[0], &counts[1], &counts[2]
	}
	slices.Sort(lat)
	f.P50, f.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	return f, nil
}

// cpuOf is a process's user+system time (Linux; 0 elsewhere).
func cpuOf(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * (time.Second / 100) // USER_HZ
}

func selfCPU() time.Duration {
	var r syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &r); err != nil {
		return 0
	}
	return time.Duration(r.Utime.Nano() + r.Stime.Nano())
}

// pinSelf binds every thread of this process to one CPU (new threads
// inherit it); restore puts back the previous mask.
func pinSelf(cpu int) (restore func(), err error) {
	var old, one cpuSet
	if err := getAffinity(0, &old); err != nil {
		return nil, err
	}
	one.set(cpu)
	set := func(m *cpuSet) error {
		// twice: a thread started while the first pass ran
		for range 2 {
			ents, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return err
			}
			for _, e := range ents {
				tid, _ := strconv.Atoi(e.Name())
				if err := setAffinity(tid, m); err != nil && !errors.Is(err, syscall.ESRCH) {
					return err
				}
			}
		}
		return nil
	}
	if err := set(&one); err != nil {
		_ = set(&old)
		return nil, err
	}
	return func() { _ = set(&old) }, nil
}

type cpuSet [16]uint64

func (s *cpuSet) set(cpu int) { s[cpu/64] |= 1 << (uint(cpu) % 64) }

func getAffinity(tid int, s *cpuSet) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, uintptr(tid), unsafe.Sizeof(*s), uintptr(unsafe.Pointer(s)))
	if e != 0 {
		return e
	}
	return nil
}

func setAffinity(tid int, s *cpuSet) error {
	_, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(*s), uintptr(unsafe.Pointer(s)))
	if e != 0 {
		return e
	}
	return nil
}

// makeNetns creates a network namespace with one end of a veth pair
// (10.231.N.2/30; this host's end is 10.231.N.1), its loopback up.
func makeNetns() (ns, nodeHost string, cleanup func(), err error) {
	id := os.Getpid() % 250
	ns = fmt.Sprintf("halapi-ab-%d", os.Getpid())
	hostIf, nsIf := fmt.Sprintf("hab%dh", os.Getpid()%100000), fmt.Sprintf("hab%dn", os.Getpid()%100000)
	hostIP, nsIP := fmt.Sprintf("10.231.%d.1/30", id), fmt.Sprintf("10.231.%d.2", id)
	run := func(args ...string) error {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	cleanup = func() {
		_ = run("netns", "del", ns)
		_ = run("link", "del", hostIf)
	}
	for _, c := range [][]string{
		{"netns", "add", ns},
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", ns},
		{"addr", "add", hostIP, "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"netns", "exec", ns, "ip", "addr", "add", nsIP + "/30", "dev", nsIf},
		{"netns", "exec", ns, "ip", "link", "set", nsIf, "up"},
		{"netns", "exec", ns, "ip", "link", "set", "lo", "up"},
	} {
		if err := run(c...); err != nil {
			cleanup()
			return "", "", nil, err
		}
	}
	return ns, nsIP, cleanup, nil
}

// freePort returns host:port for a port free on this host (in a
// namespace nobody else listens: any port will do).
func freePort(host string, inNetns bool) (string, error) {
	if inNetns {
		return net.JoinHostPort(host, strconv.Itoa(20000+os.Getpid()%20000)), nil
	}
	return ports.Addr(host, false)
}

// ports never hands out a port twice in this process.
var ports = testharness.NewPorts()

// proc is a benchmarked process (internal/testharness: it dies with this
// one), started under wrap (taskset, ip netns exec: both exec the program,
// so the pid is the program's).
type proc struct{ p *testharness.Process }

func (p *proc) pid() int { return p.p.Pid() }

func start(log string, wrap []string, bin string, args ...string) (*proc, error) {
	argv := append(append(append([]string{}, wrap...), bin), args...)
	p := &testharness.Process{Bin: argv[0], LogPath: log}
	if err := p.Start(argv[1:]...); err != nil {
		return nil, err
	}
	return &proc{p}, nil
}

func (p *proc) stop() { _ = p.p.Stop(10 * time.Second) }

// waitCA waits for the node's CA root (DATA/pki/ca.crt) and loads it.
func waitCA(ctx context.Context, path string, timeout time.Duration) (*x509.CertPool, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if b, err := os.ReadFile(path); err == nil {
			pool := x509.NewCertPool()
			if pool.AppendCertsFromPEM(b) {
				return pool, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no CA root at %s after %v", path, timeout)
}

func waitOK(ctx context.Context, tr *http.Transport, u string, timeout time.Duration) error {
	defer tr.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	c := &http.Client{Timeout: time.Second, Transport: tr}
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if resp, err := c.Get(u); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %v", u, timeout)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	return strings.TrimSpace(string(b))
}

// bouncerQuery sends one bouncer query as a firewall bouncer does and reads
// the whole answer; anything but 200 is an error.
func bouncerQuery(ctx context.Context, c *http.Client, u string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("X-Api-Key", benchKey)
	req.Header.Set("User-Agent", "crowdsec-firewall-bouncer/v0.0.31")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}
