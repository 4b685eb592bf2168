package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/models"
)

// notificationHTTPBinary is $HALAPI_NOTIFICATION_HTTP: CrowdSec's own
// notification-http plugin v1.7.6 (`make tools` builds bin/notification-http
// and `make e2e` sets the variable).
func notificationHTTPBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("HALAPI_NOTIFICATION_HTTP")
	if p == "" {
		t.Skip("HALAPI_NOTIFICATION_HTTP is not set: this test needs CrowdSec's notification-http plugin " +
			"(`make tools` builds bin/notification-http and `make e2e` sets HALAPI_NOTIFICATION_HTTP)")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("HALAPI_NOTIFICATION_HTTP: %v", err)
	}
	return p
}

// notifyReceiver is the HTTP endpoint the plugin posts to: each request is
// one batch, the JSON list of alerts the format {{.|toJson}} renders.
type notifyReceiver struct {
	mu      sync.Mutex
	batches [][]receivedAlert
	bad     []string
	srv     *http.Server
	URL     string
	// hold, when armed, makes the next batch wait (recorded, unanswered)
	// until release is closed: the test kills the sender meanwhile.
	hold    chan struct{} // closed when a batch is held
	release chan struct{}
}

// arm makes the next batch wait for the returned release function.
func (r *notifyReceiver) arm() (held <-chan struct{}, release func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hold, r.release = make(chan struct{}), make(chan struct{})
	rel := r.release
	return r.hold, func() { close(rel) }
}

type receivedAlert struct {
	UUID      string `json:"uuid"`
	MachineID string `json:"machine_id"`
	Scenario  string `json:"scenario"`
	Source    struct {
		Value string `json:"value"`
	} `json:"source"`
	Decisions []struct {
		Value    string `json:"value"`
		Type     string `json:"type"`
		Duration string `json:"duration"`
		Origin   string `json:"origin"`
	} `json:"decisions"`
}

func startNotifyReceiver(t *testing.T) *notifyReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &notifyReceiver{URL: "http://" + ln.Addr().String() + "/hook"}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 16<<20))
		var batch []receivedAlert
		r.mu.Lock()
		if err := json.Unmarshal(body, &batch); err != nil || req.Header.Get("X-Test") != "halapi" {
			r.bad = append(r.bad, fmt.Sprintf("%v %q: %.200s", err, req.Header.Get("X-Test"), body))
		} else {
			r.batches = append(r.batches, batch)
		}
		hold, release := r.hold, r.release
		r.hold = nil
		r.mu.Unlock()
		if hold != nil {
			close(hold)
			select {
			case <-release:
			case <-time.After(20 * time.Second):
			}
		}
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	t.Cleanup(func() { _ = r.srv.Close() })
	return r
}

// counts returns how often each alert UUID arrived, and the batches.
func (r *notifyReceiver) counts() (map[string]int, [][]receivedAlert, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := map[string]int{}
	for _, b := range r.batches {
		for _, a := range b {
			c[a.UUID]++
		}
	}
	return c, append([][]receivedAlert(nil), r.batches...), append([]string(nil), r.bad...)
}

// notifySetup writes the plugin dir (a copy of the real binary, owned by us,
// mode 0755 as the reference requires), the notification config and the
// profiles, and returns the serve flags.
func notifySetup(t *testing.T, receiverURL string, threshold int, wait string) []string {
	t.Helper()
	bin := notificationHTTPBinary(t)
	dir := t.TempDir()
	pdir, ndir := filepath.Join(dir, "plugins"), filepath.Join(dir, "notifications")
	for _, d := range []string{pdir, ndir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pdir, "notification-http"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`type: http
name: http_e2e
log_level: info
group_wait: %s
group_threshold: %d
max_retry: 3
timeout: 5s
format: |
  {{.|toJson}}
url: %s
method: POST
headers:
  Content-Type: application/json
  X-Test: halapi
`, wait, threshold, receiverURL)
	if err := os.WriteFile(filepath.Join(ndir, "http.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	profiles := `name: default_ip_remediation
filters:
 - Alert.Remediation == true && Alert.GetScope() == "Ip"
decisions:
 - type: ban
   duration: 4h
notifications:
 - http_e2e
on_success: break
`
	pp := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(pp, []byte(profiles), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"--profiles", pp, "--notification-dir", ndir, "--plugin-dir", pdir}
}

// pluginProcs counts the running processes of the plugin binary in pdir
// (every node of a test shares the dir; only the leader runs it).
func pluginProcs(t *testing.T, pdir string) int {
	t.Helper()
	want := filepath.Join(pdir, "notification-http")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	n := 0
	for _, e := range ents {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == want {
			n++
		}
	}
	return n
}

func flagValue(args []string, flag string) string {
	for i := range args[:len(args)-1] {
		if args[i] == flag {
			return args[i+1]
		}
	}
	return ""
}

func pushAlertTo(w *apiclient.ApiClient, ip string) error {
	_, err := call("Alerts.Add "+ip, func(ctx context.Context) (*models.AddAlertsResponse, error) {
		r, _, err := w.Alerts.Add(ctx, models.AddAlertsRequest{agentAlert(ip, "crowdsecurity/ssh-bf", 6)})
		return r, err
	})
	return err
}

// storedUUIDs lists the UUIDs of the stored alerts, as a survivor lists them.
func storedUUIDs(t *testing.T, s *ClusterNode) map[string]string {
	t.Helper()
	out := s.MustCLI("alerts", "list", "-o", "json", "--limit", "0")
	var alerts []struct {
		UUID   string `json:"uuid"`
		Source struct {
			Value string `json:"value"`
		} `json:"source"`
	}
	if err := json.Unmarshal([]byte(out), &alerts); err != nil {
		t.Fatalf("alerts list: %v\n%.500s", err, out)
	}
	m := map[string]string{}
	for _, a := range alerts {
		m[a.UUID] = a.Source.Value
	}
	return m
}

// TestNotifyPluginClusterExactlyOnce: a 3-node cluster runs CrowdSec's own
// notification-http plugin on the leader. Alerts pushed through every node
// arrive once each, in batches of at most group_threshold; the leader is
// SIGKILLed while alerts keep coming and one batch is in flight (the
// receiver holds its answer), and the count stays exact: every stored
// alert arrives, the only repeats are that batch, and the new leader says
// so in its log.
func TestNotifyPluginClusterExactlyOnce(t *testing.T) {
	recv := startNotifyReceiver(t)
	const threshold = 5
	args := notifySetup(t, recv.URL, threshold, "1s")
	pdir := flagValue(args, "--plugin-dir")
	c := StartCluster(t, 3, 60, WithServeArgs(args...))
	leader := c.Leader(c.Node(1))
	waitFor(t, 15*time.Second, "the leader's plugin to run (only there)", func() (bool, string) {
		n := pluginProcs(t, pdir)
		return n == 1, fmt.Sprintf("%d plugin processes", n)
	})
	c.Node(1).MustCLI("machines", "add", "notify-agent", "--password", "notify-agent-pw-123")
	c.WaitCaughtUp(c.Nodes...)
	watchers := map[string]*apiclient.ApiClient{}
	for _, n := range c.Nodes {
		watchers[n.ID] = newWatcher(t, n.Server, "notify-agent", "notify-agent-pw-123")
	}

	// 1. 30 alerts, 10 through each node
	for i := range 30 {
		n := c.Nodes[i%3]
		if err := pushAlertTo(watchers[n.ID], fmt.Sprintf("10.60.1.%d", i+1)); err != nil {
			t.Fatalf("push through %s: %v", n.ID, err)
		}
	}
	waitFor(t, 30*time.Second, "30 alerts notified", func() (bool, string) {
		cnt, b, bad := recv.counts()
		return len(cnt) == 30, fmt.Sprintf("%d distinct in %d batches, bad %v", len(cnt), len(b), bad)
	})
	cnt, batches, bad := recv.counts()
	if len(bad) > 0 {
		t.Fatalf("bad requests: %v", bad)
	}
	grouped := 0
	for uuid, k := range cnt {
		if k != 1 {
			t.Errorf("alert %s notified %d times", uuid, k)
		}
	}
	for _, b := range batches {
		if len(b) > threshold {
			t.Errorf("batch of %d alerts (group_threshold %d)", len(b), threshold)
		}
		if len(b) > 1 {
			grouped++
		}
		for _, a := range b {
			if a.MachineID != "notify-agent" || a.Scenario != "crowdsecurity/ssh-bf" || len(a.Decisions) != 1 ||
				a.Decisions[0].Duration != "4h" || a.Decisions[0].Type != "ban" || a.Decisions[0].Value != a.Source.Value {
				t.Errorf("alert as notified: %+v", a)
			}
		}
	}
	if grouped == 0 {
		t.Errorf("no batch grouped more than one alert (%d batches)", len(batches))
	}
	t.Logf("phase 1: 30 alerts in %d batches (%d grouped)", len(batches), grouped)
	phase1 := len(batches)

	// 2. SIGKILL the leader while alerts keep coming through the others
	survivors := c.Others(leader)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var pushErrs []string
	pushed := make(chan int, 100)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 40 {
			n := survivors[i%2]
			ip := fmt.Sprintf("10.60.2.%d", i+1)
			var err error
			for try := 0; try < 3; try++ { // a push refused during the election is retried
				if err = pushAlertTo(watchers[n.ID], ip); err == nil {
					break
				}
			}
			if err != nil {
				mu.Lock()
				pushErrs = append(pushErrs, err.Error())
				mu.Unlock()
			}
			pushed <- i
			time.Sleep(50 * time.Millisecond)
		}
		close(pushed)
	}()
	for i := range pushed {
		if i == 12 {
			// kill the leader while its plugin waits for the receiver's
			// answer to a batch: the batch was delivered, not recorded
			held, release := recv.arm()
			select {
			case <-held:
			case <-time.After(20 * time.Second):
				t.Fatal("no batch sent while alerts keep coming")
			}
			t.Logf("SIGKILL the leader %s while a batch is in flight", leader.ID)
			leader.Kill()
			release()
		}
	}
	wg.Wait()
	if len(pushErrs) > 0 {
		t.Logf("push errors (retried): %v", pushErrs)
	}
	c.WaitStable(30*time.Second, survivors...)
	stored := storedUUIDs(t, survivors[0])
	waitFor(t, 45*time.Second, "every stored alert notified", func() (bool, string) {
		cnt, _, _ := recv.counts()
		var missing []string
		for uuid, ip := range stored {
			if cnt[uuid] == 0 {
				missing = append(missing, ip)
			}
		}
		return len(missing) == 0, fmt.Sprintf("%d of %d stored alerts not notified: %v", len(missing), len(stored), missing)
	})
	cnt, batches, bad = recv.counts()
	if len(bad) > 0 {
		t.Fatalf("bad requests: %v", bad)
	}
	for uuid := range cnt {
		if _, ok := stored[uuid]; !ok {
			t.Errorf("notified alert %s is not stored", uuid)
		}
	}
	var repeated []string
	for uuid, k := range cnt {
		if k > 2 {
			t.Errorf("alert %s (%s) notified %d times", uuid, stored[uuid], k)
		}
		if k == 2 {
			repeated = append(repeated, uuid)
		}
	}
	sort.Strings(repeated)
	// a repeat is announced by the new leader; with the one leader change
	// of this test the repeats are one batch (the held one) sent again. A
	// further election on a loaded host may repeat one more batch, and
	// must announce it too.
	announced := 0
	for _, n := range survivors {
		b, _ := os.ReadFile(n.logPath)
		announced += strings.Count(string(b), "in flight at the previous leader's end is sent again")
	}
	if announced == 0 || len(repeated) == 0 || len(repeated) > threshold*announced {
		t.Errorf("%d repeated alerts, %d repeat announcements in the logs (at most %d per announcement)", len(repeated), announced, threshold)
	}
	if announced == 1 {
		one := false
		for _, b := range batches[phase1:] {
			in := map[string]bool{}
			for _, a := range b {
				in[a.UUID] = true
			}
			all := true
			for _, u := range repeated {
				all = all && in[u]
			}
			one = one || all
		}
		if !one {
			t.Errorf("%d repeated alerts are not one repeated batch", len(repeated))
		}
	}
	ips := make([]string, 0, len(repeated))
	for _, u := range repeated {
		ips = append(ips, stored[u])
	}
	t.Logf("phase 2: %d stored alerts all notified, %d batches after the kill; repeated after the failover: %d alert(s) %v (%d announced in the log)",
		len(stored), len(batches)-phase1, len(repeated), strings.Join(ips, " "), announced)
	// the killed leader's plugin died with it (Pdeathsig); the new leader runs one
	waitFor(t, 15*time.Second, "one plugin process after the failover", func() (bool, string) {
		n := pluginProcs(t, pdir)
		return n == 1, fmt.Sprintf("%d plugin processes", n)
	})
	var lv struct {
		Notifications []struct {
			Name   string `json:"name"`
			Active bool   `json:"active"`
			Sent   int64  `json:"sent"`
			Lost   int64  `json:"lost"`
		} `json:"notifications"`
	}
	if err := json.Unmarshal([]byte(survivors[1].MustCLI("notifications", "list", "-o", "json")), &lv); err != nil {
		t.Fatal(err)
	}
	if len(lv.Notifications) != 1 || lv.Notifications[0].Name != "http_e2e" || !lv.Notifications[0].Active ||
		lv.Notifications[0].Lost != 0 || lv.Notifications[0].Sent < int64(len(stored)) {
		t.Errorf("notifications list: %+v (stored %d)", lv, len(stored))
	}
	if out := survivors[0].MustCLI("notifications", "inspect", "http_e2e"); !strings.Contains(out, "Group threshold:   5") ||
		!strings.Contains(out, "{{.|toJson}}") {
		t.Errorf("inspect:\n%s", out)
	}
	if out, err := survivors[0].CLI("notifications", "inspect", "nope"); err == nil || !strings.Contains(err.Error()+out, "notification 'nope' not found") {
		t.Errorf("inspect of an unknown name: %v %s", err, out)
	}
	before := len(batches)
	for _, n := range survivors { // the leader uses its running plugin, a follower starts one for the test
		if out := n.MustCLI("notifications", "test", "http_e2e"); !strings.Contains(out, "sent") {
			t.Errorf("test on %s: %s", n.ID, out)
		}
	}
	_, batches, _ = recv.counts()
	if len(batches) != before+2 || batches[before][0].Scenario != "test alert" || batches[before+1][0].Scenario != "test alert" {
		t.Errorf("test notifications: %d new batches", len(batches)-before)
	}
	if len(stored) != 70 {
		t.Logf("stored %d alerts (70 pushed; a push that failed on every try is not stored or stored once)", len(stored))
	}

	// a graceful stop (SIGTERM) of the leader, then of the last node, stops
	// their plugins: none is left behind
	first := c.Leader(survivors[0])
	for _, n := range append([]*ClusterNode{first}, c.Others(leader, first)...) {
		n.Stop()
		n.setUp(false)
		b, _ := os.ReadFile(n.logPath)
		if strings.Contains(string(b), "after SIGTERM, sending SIGKILL") {
			t.Fatalf("%s did not stop on SIGTERM", n.ID)
		}
	}
	waitFor(t, 15*time.Second, "no plugin process after the nodes stopped", func() (bool, string) {
		n := pluginProcs(t, pdir)
		return n == 0, fmt.Sprintf("%d plugin processes", n)
	})
}
