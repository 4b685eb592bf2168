package e2e

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// ipPool tracks the IPs the workers add, delete and read.
type ipPool struct {
	mu        sync.Mutex
	all       []string // every IP an add was invoked for, in order
	state     map[string]*ipState
	deletable []ackedIP // acknowledged adds no delete was tried on, oldest first
	deleting  map[string]bool
}

type ackedIP struct {
	ip    string
	adder int // worker that added it
}

type ipState struct {
	addAcked, delTried, delAcked bool
	delN                         int // nbDeleted of an acknowledged delete
}

func newIPPool() *ipPool {
	return &ipPool{state: map[string]*ipState{}, deleting: map[string]bool{}}
}

func (p *ipPool) startAdd(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all = append(p.all, ip)
	p.state[ip] = &ipState{}
}

func (p *ipPool) endAdd(ip string, adder int, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.state[ip].addAcked = true
		p.deletable = append(p.deletable, ackedIP{ip, adder})
	}
}

// pickDelete takes an acknowledged IP out of the deletable set for worker
// me: most often the newest one another worker (so another node) added,
// the case where a lagging node could miss it; otherwise one at random.
func (p *ipPool) pickDelete(rng *rand.Rand, me int) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.deletable) == 0 {
		return "", false
	}
	i := rng.IntN(len(p.deletable))
	if rng.IntN(100) < 60 {
		for j := len(p.deletable) - 1; j >= 0; j-- {
			if p.deletable[j].adder != me {
				i = j
				break
			}
		}
	}
	ip := p.deletable[i].ip
	p.deletable = slices.Delete(p.deletable, i, i+1)
	p.state[ip].delTried = true
	p.deleting[ip] = true
	return ip, true
}

func (p *ipPool) endDelete(ip string, ok bool, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.deleting, ip)
	if ok {
		p.state[ip].delAcked = true
		p.state[ip].delN = n
	}
}

// readTargets picks IPs likely to be written concurrently: recent adds,
// deletes in flight, and one at random.
func (p *ipPool) readTargets(rng *rand.Rand) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.all) == 0 {
		return nil
	}
	var out []string
	recent := p.all[max(0, len(p.all)-8):]
	for range 2 {
		out = append(out, recent[rng.IntN(len(recent))])
	}
	for ip := range p.deleting {
		out = append(out, ip)
		break
	}
	out = append(out, p.all[rng.IntN(len(p.all))])
	slices.Sort(out)
	return slices.Compact(out)
}

func (p *ipPool) snapshot() ([]string, map[string]ipState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := make(map[string]ipState, len(p.state))
	for ip, s := range p.state {
		st[ip] = *s
	}
	return slices.Clone(p.all), st
}

// ackLog records acknowledged writes (node index, invocation, response).
type ackLog struct {
	mu   sync.Mutex
	acks [][3]int64
}

func (a *ackLog) add(node int, call, ret int64) {
	a.mu.Lock()
	a.acks = append(a.acks, [3]int64{int64(node), call, ret})
	a.mu.Unlock()
}

// firstAfter returns the earliest response time of a write invoked at or
// after since on a node other than exclude.
func (a *ackLog) firstAfter(since int64, exclude int) (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	best, ok := int64(0), false
	for _, w := range a.acks {
		if int(w[0]) == exclude || w[1] < since {
			continue
		}
		if !ok || w[2] < best {
			best, ok = w[2], true
		}
	}
	return best, ok
}

// clusterClient is the set of real clients one worker drives against one
// node: a cscli-like watcher and a live-mode bouncer.
type clusterClient struct {
	nd  *ClusterNode
	w   *apiclient.ApiClient
	lb  *csbouncer.LiveBouncer
	ops atomic.Int64 // completed operations
}

// failoverWorker adds, deletes and reads (linearizably) against its node
// until stop is closed, recording every operation.
type failoverWorker struct {
	id   int // 0-based, also the porcupine client id
	cl   *clusterClient
	pool *ipPool
	h    *opHistory
	acks *ackLog
	rng  *rand.Rand
	next int
}

func (fw *failoverWorker) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if !fw.cl.nd.Up() {
			select {
			case <-stop:
				return
			case <-time.After(pollInterval):
			}
			continue
		}
		switch r := fw.rng.IntN(100); {
		case r < 40:
			fw.add()
		case r < 65:
			if !fw.del() {
				fw.add()
			}
		default:
			fw.read()
		}
		fw.cl.ops.Add(1)
	}
}

func (fw *failoverWorker) add() {
	fw.next++
	ip := fmt.Sprintf("10.%d.%d.%d", fw.cl.nd.Index, fw.next/250, fw.next%250+1)
	fw.pool.startAdd(ip)
	call := fw.h.now()
	err := tryAddDecision(fw.cl.w, ip)
	ret := fw.h.now()
	fw.pool.endAdd(ip, fw.id, err == nil)
	fw.h.record(fw.id, regInput{opAdd, ip}, regOutput{Unknown: err != nil}, call, ret)
	if err == nil {
		fw.acks.add(fw.id, call, ret)
	}
}

func (fw *failoverWorker) del() bool {
	ip, ok := fw.pool.pickDelete(fw.rng, fw.id)
	if !ok {
		return false
	}
	call := fw.h.now()
	n, err := tryDeleteIP(fw.cl.w, ip)
	ret := fw.h.now()
	fw.pool.endDelete(ip, err == nil, n)
	fw.h.record(fw.id, regInput{opDelete, ip}, regOutput{Unknown: err != nil, N: n}, call, ret)
	if err == nil {
		fw.acks.add(fw.id, call, ret)
	}
	return true
}

// read is a barrier write followed by live queries on the same node and the
// same process; see the model in linearizability_test.go.
func (fw *failoverWorker) read() {
	ips := fw.pool.readTargets(fw.rng)
	if len(ips) == 0 {
		return
	}
	epoch := fw.cl.nd.Epoch()
	call := fw.h.now()
	if err := tryBarrier(fw.cl.w); err != nil {
		return
	}
	fw.acks.add(fw.id, call, fw.h.now())
	for _, ip := range ips {
		ds, err := tryLiveGet(fw.cl.lb, ip)
		ret := fw.h.now()
		if err != nil || fw.cl.nd.Epoch() != epoch {
			return
		}
		fw.h.record(fw.id, regInput{opRead, ip}, regOutput{Present: len(decisionsFor(ds, ip)) > 0}, call, ret)
	}
}

// TestClusterFailover runs real clients on every node of a 3-node cluster at
// once (a cscli-like watcher adding and deleting decisions, a live bouncer
// reading, a stream bouncer) and SIGKILLs the leader in the middle of the
// writes. Afterwards every acknowledged write is on every node (the
// restarted one too), no deleted decision comes back in any stream or live
// query, writes resumed quickly on the survivors, and the recorded history
// is linearizable (see registerModel).
func TestClusterFailover(t *testing.T) {
	const (
		opsBeforeKill   = 25
		opsAfterKill    = 30
		opsAfterRestart = 20
		// resumeBound: an election takes about a second; a write waits up
		// to ~3 s for it before the server answers 503.
		resumeBound  = 10 * time.Second
		phaseTimeout = 60 * time.Second
		password     = "e2e-failover-password-0123456789abcdef"
		readerKey    = "e2e-failover-reader-key-0123456789abcdef"
	)

	c := StartCluster(t, 3, 10, WithServeArgs("--flush-max-items", "1000000"))
	addBouncer(t, c.Node(1).Server, "reader", readerKey)

	clients := make([]*clusterClient, len(c.Nodes))
	streams := make([]*streamTracker, len(c.Nodes))
	for i, nd := range c.Nodes {
		streamKey := fmt.Sprintf("e2e-failover-stream-%s-key-0123456789abcdef", nd.ID)
		addBouncer(t, nd.Server, "stream-"+nd.ID, streamKey)
		clients[i] = &clusterClient{
			nd: nd,
			w:  addMachine(t, nd.Server, "cscli-"+nd.ID, password),
			lb: newLiveBouncer(t, nd.Server, readerKey),
		}
		streams[i] = startTrackedStream(t, "stream bouncer on "+nd.ID, nd.URL, streamKey)
	}

	h := newOpHistory()
	pool := newIPPool()
	acks := &ackLog{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	seed := uint64(time.Now().UnixNano())
	t.Logf("worker seed %d; porcupine client i is the worker on node n<i+1>", seed)
	for i, cl := range clients {
		fw := &failoverWorker{id: i, cl: cl, pool: pool, h: h, acks: acks, rng: rand.New(rand.NewPCG(seed, uint64(i)))}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fw.run(stop)
		}()
	}
	stopped := false
	stopWorkers := func() {
		if stopped {
			return
		}
		stopped = true
		close(stop)
		done := make(chan struct{})
		go func() {
			wg.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * (callTimeout + callGrace)):
			t.Errorf("workers still running %s after stop", 2*(callTimeout+callGrace))
		}
	}
	t.Cleanup(stopWorkers)

	opsAtLeast := func(what string, want map[*clusterClient]int64) {
		t.Helper()
		waitFor(t, phaseTimeout, what, func() (bool, string) {
			ok := true
			var got []string
			for cl, n := range want {
				done := cl.ops.Load()
				got = append(got, fmt.Sprintf("%s:%d/%d", cl.nd.ID, done, n))
				ok = ok && done >= n
			}
			sort.Strings(got)
			return ok, fmt.Sprint(got)
		})
	}
	counts := func(cls ...*clusterClient) map[*clusterClient]int64 {
		m := map[*clusterClient]int64{}
		for _, cl := range cls {
			m[cl] = cl.ops.Load()
		}
		return m
	}
	plus := func(m map[*clusterClient]int64, n int64) map[*clusterClient]int64 {
		for k := range m {
			m[k] += n
		}
		return m
	}

	// Concurrent traffic on every node, then a crash of the leader.
	opsAtLeast("every worker has done some operations", plus(counts(clients...), opsBeforeKill))
	leader := c.Leader(c.Node(1))
	victim := clients[leader.Index-1]
	survivors := c.Others(leader)
	var survivorClients []*clusterClient
	for _, cl := range clients {
		if cl != victim {
			survivorClients = append(survivorClients, cl)
		}
	}
	killAt := h.now()
	leader.Kill()
	t.Logf("SIGKILL of leader %s at %s", leader.ID, time.Duration(killAt))

	opsAtLeast("survivors keep working after the leader's crash", plus(counts(survivorClients...), opsAfterKill))
	newLeader := c.WaitStable(clusterFormTimeout, survivors...)
	first, ok := acks.firstAfter(killAt, victim.nd.Index-1)
	if !ok {
		t.Fatalf("no write invoked after the crash was acknowledged")
	}
	resume := time.Duration(first - killAt)
	t.Logf("new leader %s; first write invoked after the crash acknowledged %s after it", newLeader.ID, resume)
	if resume > resumeBound {
		t.Errorf("writes resumed %s after the leader's crash, want within %s", resume, resumeBound)
	}

	// The crashed node comes back with the same command line.
	leader.Restart()
	c.WaitStable(clusterFormTimeout, c.Nodes...)
	c.CheckMembersAlive(gossipSettle, c.Nodes...)
	opsAtLeast("the restarted node's worker works again", plus(counts(victim), opsAfterRestart))
	stopWorkers()

	// Convergence, then a final linearizable read of every IP on every node.
	c.WaitCaughtUp(c.Nodes...)
	all, states := pool.snapshot()
	finals := make([]map[string]bool, len(clients))
	for i, cl := range clients {
		call := h.now()
		if err := tryBarrier(cl.w); err != nil {
			t.Fatalf("final barrier write on %s: %v", cl.nd.ID, err)
		}
		ds, err := liveList(cl.lb)
		if err != nil {
			t.Fatalf("final live list on %s: %v", cl.nd.ID, err)
		}
		ret := h.now()
		finals[i] = valueSet(ds)
		for _, ip := range all {
			h.record(i, regInput{opRead, ip}, regOutput{Present: finals[i][ip]}, call, ret)
		}
	}

	// A delete is only invoked once the add of its IP was acknowledged, so
	// it must have deleted something.
	var noop []string
	for ip, s := range states {
		if s.delAcked && s.delN == 0 {
			noop = append(noop, ip)
		}
	}
	if len(noop) > 0 {
		sort.Strings(noop)
		t.Errorf("%d deletes (DELETE /v1/decisions?ip=) answered nbDeleted 0 although the IP's add had been acknowledged before they were sent: %v",
			len(noop), noop)
	}

	// Every node holds the same decisions: every acknowledged add that no
	// one tried to delete, none that was deleted, nothing else.
	for i, cl := range clients {
		if d := setDiff(finals[i], finals[0]); d != "" {
			t.Errorf("final active set on %s differs from %s's: %s", cl.nd.ID, clients[0].nd.ID, d)
		}
		var lost, back []string
		for ip, s := range states {
			if s.addAcked && !s.delTried && !finals[i][ip] {
				lost = append(lost, ip)
			}
			if s.delAcked && s.delN > 0 && finals[i][ip] {
				back = append(back, ip)
			}
		}
		for v := range finals[i] {
			if _, ok := states[v]; !ok {
				t.Errorf("%s: unexpected decision for %s", cl.nd.ID, v)
			}
		}
		if len(lost) > 0 {
			t.Errorf("%s: acknowledged adds missing: %v", cl.nd.ID, lost)
		}
		if len(back) > 0 {
			t.Errorf("%s: acknowledged deletes undone: %v", cl.nd.ID, back)
		}
	}

	// Every stream bouncer (the one on the crashed node too) ends with the
	// active set and never got a deleted decision back.
	for _, st := range streams {
		st.waitValues(t, streamWait, finals[0])
		if p := st.problems(); len(p) > 0 {
			t.Errorf("%s: %v", st.name, p)
		}
	}

	ops := h.operations()
	hc := countHistory(ops)
	t.Logf("history: %s; %d IPs, %d active at the end", hc, len(all), len(finals[0]))
	if hc.adds-hc.addsUnknown == 0 || hc.deletesHit == 0 || hc.readsPresent == 0 || hc.readsAbsent == 0 {
		t.Fatalf("history too thin to mean anything: %s", hc)
	}
	checkLinearizable(t, ops)
}
