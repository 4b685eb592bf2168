package agentbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// VIPResult is what a client saw when a virtual IP moved.
type VIPResult struct {
	// MoveAfter is when the address moved after the holder's host went
	// down (the emulated VRRP detection: keepalived's would be ~3.6 s).
	MoveAfter time.Duration `json:"move_after"`
	// FirstOK is the first answer from the new holder, after the move.
	FirstOK time.Duration `json:"first_ok_after_move"`
	// Failed counts the client's requests that failed; Errors are their
	// distinct errors.
	Failed int      `json:"failed"`
	Errors []string `json:"errors"`
}

// VIP emulates a virtual IP on this machine: two single-node halapi
// servers, each in its own network namespace, bridged with this host (the
// client's); the address 10.232.N.100 on the first. The client polls the
// bouncer query every 10 ms over a keep-alive connection (as go-cs-bouncer
// does, with a 5 s timeout it does not have). Then the holder's host goes
// down (its link is cut: no RST, no FIN), and moveAfter later the address
// is added on the second and the client's neighbour entry is pointed at
// it — what keepalived's gratuitous ARPs do; there is no arping here.
// VRRP's detection itself (3 × advert_int + skew) is not emulated: add it.
// Needs root and `ip`.
func VIP(ctx context.Context, bin string, moveAfter time.Duration, log io.Writer) (*VIPResult, error) {
	if why := Available(Netns); why != "" {
		return nil, errors.New(why)
	}
	logf := func(format string, args ...any) {
		if log != nil {
			fmt.Fprintf(log, "agentbench vip: "+format+"\n", args...)
		}
	}
	dir, err := os.MkdirTemp("", "halapi-vip-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pid := os.Getpid()
	net3 := fmt.Sprintf("10.232.%d", pid%250)
	vip := net3 + ".100"
	br := fmt.Sprintf("hvb%d", pid%100000)
	run := func(args ...string) error {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	type side struct{ ns, hostIf, nsIf, ip string }
	sides := []side{
		{fmt.Sprintf("halapi-vip-%d-a", pid), fmt.Sprintf("hva%dh", pid%100000), fmt.Sprintf("hva%dn", pid%100000), net3 + ".2"},
		{fmt.Sprintf("halapi-vip-%d-b", pid), fmt.Sprintf("hvb%dh", pid%100000), fmt.Sprintf("hvb%dn", pid%100000), net3 + ".3"},
	}
	cleanup := func() {
		for _, s := range sides {
			_ = run("netns", "del", s.ns)
			_ = run("link", "del", s.hostIf)
		}
		_ = run("link", "del", br)
	}
	defer cleanup()
	steps := [][]string{{"link", "add", br, "type", "bridge"}, {"addr", "add", net3 + ".1/24", "dev", br}, {"link", "set", br, "up"}}
	for _, s := range sides {
		steps = append(steps,
			[]string{"netns", "add", s.ns},
			[]string{"link", "add", s.hostIf, "type", "veth", "peer", "name", s.nsIf},
			[]string{"link", "set", s.nsIf, "netns", s.ns},
			[]string{"link", "set", s.hostIf, "master", br},
			[]string{"link", "set", s.hostIf, "up"},
			[]string{"-n", s.ns, "addr", "add", s.ip + "/24", "dev", s.nsIf},
			[]string{"-n", s.ns, "link", "set", s.nsIf, "up"},
			[]string{"-n", s.ns, "link", "set", "lo", "up"})
	}
	steps = append(steps, []string{"-n", sides[0].ns, "addr", "add", vip + "/24", "dev", sides[0].nsIf})
	for _, c := range steps {
		if err := run(c...); err != nil {
			return nil, err
		}
	}
	var nodes []*proc
	defer func() {
		for _, p := range nodes {
			p.stop()
		}
	}()
	for i, s := range sides {
		data := filepath.Join(dir, fmt.Sprintf("n%d", i))
		p, err := start(filepath.Join(dir, fmt.Sprintf("n%d.log", i)), []string{"ip", "netns", "exec", s.ns}, bin,
			"serve", "--data-dir", data, "--listen", "0.0.0.0:8080", "--plain-http", "--allow-plain-http-remote", "--metrics-listen", "")
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, p)
		if err := waitOK(ctx, &http.Transport{}, "http://"+s.ip+":8080/health", 30*time.Second); err != nil {
			return nil, fmt.Errorf("node %d: %w", i, err)
		}
		out, err := exec.CommandContext(ctx, bin, "bouncers", "add", "bench", "--key", benchKey, "--data-dir", data).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("bouncers add: %v: %s", err, out)
		}
	}
	out, err := exec.Command("ip", "-n", sides[1].ns, "-o", "link", "show", "dev", sides[1].nsIf).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("MAC of the second holder: %v: %s", err, out)
	}
	m := regexp.MustCompile(`link/ether ([0-9a-f:]{17})`).FindStringSubmatch(string(out))
	if m == nil {
		return nil, fmt.Errorf("no MAC in %q", out)
	}
	macB := m[1]

	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	one := func() error { return bouncerQuery(ctx, c, "http://"+vip+":8080/v1/decisions?ip=10.1.0.7") }
	for i := range 20 {
		if err := one(); err != nil {
			return nil, fmt.Errorf("before the move, request %d: %w", i, err)
		}
	}
	logf("VIP %s on %s; cutting its link", vip, sides[0].ns)
	res := &VIPResult{MoveAfter: moveAfter}
	type ev struct {
		at  time.Time
		err error
	}
	evs := make(chan ev, 1024)
	stop := make(chan struct{})
	var stopped bool
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
		}
	}
	go func() {
		defer close(evs)
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := one()
			evs <- ev{time.Now(), err}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if err := run("link", "set", sides[0].hostIf, "down"); err != nil {
		halt()
		return nil, err
	}
	time.Sleep(moveAfter)
	moved := time.Now()
	moveErr := run("-n", sides[1].ns, "addr", "add", vip+"/24", "dev", sides[1].nsIf)
	if moveErr == nil {
		moveErr = run("neigh", "replace", vip, "lladdr", macB, "dev", br, "nud", "reachable")
	}
	if moveErr != nil {
		halt()
		return nil, moveErr
	}
	deadline := time.After(30 * time.Second)
	seen := map[string]bool{}
	for done := false; !done; {
		select {
		case e, ok := <-evs:
			if !ok {
				done = true
				break
			}
			if e.err != nil {
				res.Failed++
				msg := e.err.Error()
				if i := strings.LastIndex(msg, ": "); i >= 0 {
					msg = msg[i+2:]
				}
				if !seen[msg] {
					seen[msg] = true
					res.Errors = append(res.Errors, msg)
				}
				continue
			}
			if e.at.After(moved) && res.FirstOK == 0 {
				res.FirstOK = e.at.Sub(moved)
				halt()
			}
		case <-deadline:
			halt()
			return res, errors.New("no answer from the new holder within 30 s")
		}
	}
	logf("first answer %v after the move, %d failed request(s): %v", res.FirstOK, res.Failed, res.Errors)
	return res, nil
}
