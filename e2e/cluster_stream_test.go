package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
)

// switchProxy is an HTTP reverse proxy whose backend can be switched, as a
// load balancer moving a client from a dead node to another one: the
// client keeps running (a stream bouncer does not restart, so its next
// pull is not a startup pull and relies on its replicated cursor).
type switchProxy struct {
	target atomic.Pointer[url.URL]
	srv    *httptest.Server
	URL    string // with a trailing slash
}

func newSwitchProxy(t testing.TB, to string) *switchProxy {
	t.Helper()

	p := &switchProxy{}
	p.switchTo(t, to)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(p.target.Load())
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, err.Error(), http.StatusBadGateway)
		},
	}
	p.srv = httptest.NewServer(rp)
	p.URL = p.srv.URL + "/"
	t.Cleanup(p.srv.Close)

	return p
}

func (p *switchProxy) switchTo(t testing.TB, to string) {
	t.Helper()
	p.target.Store(mustURL(t, to))
}

// streamWriter adds decisions (unique IPs) and deletes some of its own
// through one node until stopped. It deletes only what its own node
// acknowledged, so deletions never depend on another node's lag.
type streamWriter struct {
	nd     *ClusterNode
	w      *apiclient.ApiClient
	prefix string
	ops    atomic.Int64
	errs   atomic.Int64
}

func (sw *streamWriter) run(stop <-chan struct{}, rng *rand.Rand) {
	var mine []string
	next := 0
	for {
		select {
		case <-stop:
			return
		default:
		}
		if !sw.nd.Up() {
			select {
			case <-stop:
				return
			case <-time.After(pollInterval):
			}
			continue
		}
		if len(mine) > 0 && rng.IntN(100) < 35 {
			i := rng.IntN(len(mine))
			ip := mine[i]
			mine = slices.Delete(mine, i, i+1)
			if _, err := tryDeleteIP(sw.w, ip); err != nil {
				sw.errs.Add(1)
			}
		} else {
			next++
			ip := fmt.Sprintf("%s.%d.%d", sw.prefix, next/250, next%250+1)
			if err := tryAddDecision(sw.w, ip); err != nil {
				sw.errs.Add(1)
			} else {
				mine = append(mine, ip)
			}
		}
		sw.ops.Add(1)
	}
}

// TestStreamBouncerMovesNodes runs two stream bouncers while decisions are
// added and deleted on every node: bouncer A (one key, one bouncer row)
// talks to node 1 through a load-balancer-like proxy that moves it to node
// 2 when node 1 is SIGKILLed, without restarting the bouncer; bouncer B
// (another key) stays on node 3. A may get duplicates after the move but
// must miss nothing: in the end both bouncers hold exactly the live active
// set, and no deleted decision ever came back.
func TestStreamBouncerMovesNodes(t *testing.T) {
	const (
		password = "e2e-stream-move-password-0123456789abcdef"
		keyA     = "e2e-stream-move-bouncer-a-key-0123456789"
		keyB     = "e2e-stream-move-bouncer-b-key-0123456789"
		opsPhase = 20
	)

	c := StartCluster(t, 3, 30)
	n1, n2, n3 := c.Node(1), c.Node(2), c.Node(3)
	addBouncer(t, n1.Server, "bouncer-a", keyA)
	addBouncer(t, n3.Server, "bouncer-b", keyB)

	writers := make([]*streamWriter, len(c.Nodes))
	for i, nd := range c.Nodes {
		writers[i] = &streamWriter{
			nd:     nd,
			w:      addMachine(t, nd.Server, "cscli-"+nd.ID, password),
			prefix: fmt.Sprintf("11.%d", nd.Index),
		}
	}
	// Decisions that exist before the bouncers start (startup answer).
	for _, sw := range writers {
		if err := tryAddDecision(sw.w, sw.prefix+".255.1"); err != nil {
			t.Fatalf("add on %s: %v", sw.nd.ID, err)
		}
	}

	lbA := newSwitchProxy(t, n1.URL)
	a := startTrackedStream(t, "bouncer A (node 1, then node 2)", lbA.URL, keyA)
	b := startTrackedStream(t, "bouncer B (node 3)", n3.URL, keyB)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	seed := uint64(time.Now().UnixNano())
	t.Logf("writer seed %d", seed)
	for i, sw := range writers {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sw.run(stop, rng)
		}()
	}
	var once sync.Once
	stopWriters := func() {
		once.Do(func() {
			close(stop)
			wg.Wait()
		})
	}
	t.Cleanup(stopWriters)

	progress := func(what string, st *streamTracker, answers int, ws []*streamWriter, ops int64) {
		t.Helper()
		base := make([]int64, len(ws))
		for i, sw := range ws {
			base[i] = sw.ops.Load()
		}
		startAnswers := st.answerCount()
		waitFor(t, 30*time.Second, what, func() (bool, string) {
			ok := st.answerCount()-startAnswers >= answers
			descr := fmt.Sprintf("%s: %d answers", st.name, st.answerCount()-startAnswers)
			for i, sw := range ws {
				done := sw.ops.Load() - base[i]
				ok = ok && done >= ops
				descr += fmt.Sprintf(", writer %s: %d ops", sw.nd.ID, done)
			}
			return ok, descr
		})
	}

	progress("bouncer A pulls from node 1 while every node writes", a, 10, writers, opsPhase)

	// Node 1 crashes; the load balancer sends A to node 2.
	n1.Kill()
	lbA.switchTo(t, n2.URL)
	t.Logf("node 1 killed, bouncer A moved to node 2 after %d answers", a.answerCount())

	progress("bouncer A pulls from node 2 while nodes 2 and 3 write", a, 15, writers[1:], opsPhase)
	stopWriters()
	for _, sw := range writers {
		t.Logf("writer %s: %d operations, %d failed", sw.nd.ID, sw.ops.Load(), sw.errs.Load())
	}

	c.WaitCaughtUp(n2, n3)
	lb := newLiveBouncer(t, n2.Server, keyB)
	live, err := liveList(lb)
	if err != nil {
		t.Fatalf("live list on node 2: %v", err)
	}
	want := valueSet(live)
	lb3 := newLiveBouncer(t, n3.Server, keyB)
	live3, err := liveList(lb3)
	if err != nil {
		t.Fatalf("live list on node 3: %v", err)
	}
	if d := setDiff(valueSet(live3), want); d != "" {
		t.Errorf("node 3's active set differs from node 2's: %s", d)
	}
	t.Logf("%d active decisions at the end", len(want))

	for _, st := range []*streamTracker{a, b} {
		st.waitValues(t, streamWait, want)
		if p := st.problems(); len(p) > 0 {
			t.Errorf("%s: %v", st.name, p)
		}
	}
	if d := setDiff(a.values(), b.values()); d != "" {
		t.Errorf("bouncer A's set differs from bouncer B's: %s", d)
	}

	// A moved as one bouncer: one row, no row per node or per IP.
	out := n2.MustCLI("bouncers", "list", "-o", "json")
	if n := countBouncerRows(t, out, "bouncer-a"); n != 1 {
		t.Errorf("bouncers list has %d rows for bouncer A, want 1:\n%s", n, out)
	}
}

// countBouncerRows counts the rows of `bouncers list -o json` whose name
// is name or derived from it (name@ip).
func countBouncerRows(t testing.TB, out, name string) int {
	t.Helper()

	var items []map[string]any
	if err := json.Unmarshal([]byte(out), &items); err != nil {
		t.Fatalf("bouncers list -o json: %v\n%s", err, out)
	}
	n := 0
	for _, it := range items {
		if s, _ := it["name"].(string); s == name || len(s) > len(name) && s[:len(name)+1] == name+"@" {
			n++
		}
	}
	return n
}
