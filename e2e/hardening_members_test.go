package e2e

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// Hardening: a removed node or a fake gossip member must never take the
// cluster down. Secure (PKI) clusters on loopback, real processes.

// TestHardeningMembersRemove: `cluster remove` revokes the node's
// certificates (refused on the cluster port and at /renew), the removed
// node stays out when restarted with its old data dir or a new node ID,
// the two others keep a leader and take writes, the node comes back with a
// fresh join token; a node removed while it is down stays out too.
func TestHardeningMembersRemove(t *testing.T) {
	sc := startSecureCluster(t, 3)
	n1, n2, n3 := sc.Nodes[0], sc.Nodes[1], sc.Nodes[2]
	crt, key := filepath.Join(n3.DataDir, "pki", "node.crt"), filepath.Join(n3.DataDir, "pki", "node.key")

	// Before the removal n3's certificate opens the cluster port, and
	// /renew gives it a second one (which the removal must revoke too).
	if err := clusterStatusRPC(sc.CAFile, crt, key, n1.ClusterAddr); err != nil {
		t.Fatalf("before the removal, n3's certificate is refused on n1's cluster port: %v", err)
	}
	code, body := stepRenew(t, sc.CAFile, crt, key, n1.Addr)
	if code != http.StatusCreated {
		t.Fatalf("before the removal, /renew with n3's certificate: HTTP %d %s", code, body)
	}
	renewed := filepath.Join(t.TempDir(), "renewed.crt")
	var rr struct {
		Chain []string `json:"certChain"`
	}
	if err := json.Unmarshal(body, &rr); err != nil || len(rr.Chain) < 2 {
		t.Fatalf("/renew answer: %v %s", err, body)
	}
	if err := os.WriteFile(renewed, []byte(strings.Join(rr.Chain, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := clusterStatusRPC(sc.CAFile, renewed, key, n2.ClusterAddr); err != nil {
		t.Fatalf("before the removal, n3's renewed certificate is refused on n2's cluster port: %v", err)
	}
	certs := map[string]string{"n3's certificate": crt, "n3's renewed certificate": renewed}

	// A cluster connection opened before the removal (as a removed node
	// holds in its pools) must not outlive it.
	held, err := dialCluster(sc.CAFile, crt, key, n1.ClusterAddr)
	if err != nil {
		t.Fatalf("before the removal, n3's certificate is refused on n1's cluster port: %v", err)
	}
	defer held.Close()
	if err := statusRPC(held); err != nil {
		t.Fatalf("status RPC on a held connection before the removal: %v", err)
	}

	// Remove n3 while it runs.
	waitFor(t, clusterFormTimeout, "cluster remove n3", func() (bool, string) {
		out, err := n1.CLI("cluster", "remove", n3.ID)
		if err != nil {
			return false, err.Error()
		}
		return true, out
	})
	waitFor(t, gossipSettle, "n3 logs that it was removed and needs a new join token", func() (bool, string) {
		log := readLog(t, n3)
		return strings.Contains(log, "removed from the cluster") && strings.Contains(log, "join-token"), lastLine(log)
	})
	// It keeps serving reads from its last state.
	if _, err := n3.CLI("decisions", "list"); err != nil {
		t.Errorf("the removed n3 no longer serves reads: %v", err)
	}
	// ... but its writes do not reach the cluster.
	if _, err := n3.CLI("decisions", "add", "-i", "10.77.9.9", "-d", "1h"); err == nil {
		t.Errorf("the removed n3 still takes writes")
	}
	refused := func(what string) {
		t.Helper()
		for name, c := range certs {
			for _, nd := range []*ClusterNode{n1, n2} {
				if err := clusterStatusRPC(sc.CAFile, c, key, nd.ClusterAddr); err == nil {
					t.Errorf("%s: %s still opens %s's cluster port", what, name, nd.ID)
				}
			}
			if code, body := stepRenew(t, sc.CAFile, c, key, n2.Addr); code != http.StatusUnauthorized {
				t.Errorf("%s: /renew with %s: HTTP %d %s, want 401", what, name, code, body)
			}
		}
	}
	refused("after cluster remove")
	waitFor(t, 5*time.Second, "n1 closes the connection n3 opened before its removal", func() (bool, string) {
		err := statusRPC(held)
		return err != nil, "status RPC still answered"
	})
	twoVoters(t, sc, n1, n2)
	mustWrite(t, n2, "10.77.0.1")

	// Restarted with its old data dir, or with a new node ID on it, n3
	// refuses to start and says why.
	n3.Stop()
	for _, id := range []string{n3.ID, "n3-renamed"} {
		out := serveMustExit(t, n3, id)
		if !strings.Contains(out, "removed from the cluster") || !strings.Contains(out, "--join-token") {
			t.Errorf("restart of the removed node as %s: the exit message does not say it was removed and needs a join token:\n%s", id, out)
		}
	}
	twoVoters(t, sc, n1, n2)
	mustWrite(t, n1, "10.77.0.2")

	// A fresh join token brings it back (its old state is set aside).
	tok := sc.JoinToken(n1)
	setArg(n3, "--join-token", tok)
	setArg(n3, "--join-api", n1.Addr)
	n3.Launch()
	n3.waitHealthy()
	n3.setUp(true)
	sc.WaitStable(clusterFormTimeout, n1, n2, n3)
	mustWrite(t, n3, "10.77.0.3")

	// Removed while down: it never learns it, but its certificate is
	// revoked and the gossip key rotated, so it stays out once restarted.
	n3.Stop()
	waitFor(t, clusterFormTimeout, "cluster remove n3 (down)", func() (bool, string) {
		out, err := n2.CLI("cluster", "remove", n3.ID)
		if err != nil {
			return false, err.Error()
		}
		return true, out
	})
	crt = filepath.Join(n3.DataDir, "pki", "node.crt")
	certs = map[string]string{"n3's new certificate": crt}
	refused("after removing the stopped n3")
	const refusedLine = "the cluster refuses this node's certificate"
	before := strings.Count(readLog(t, n3), refusedLine)
	n3.Launch()
	waitFor(t, clusterFormTimeout, "the restarted n3 is refused by its former peers and says so", func() (bool, string) {
		log := readLog(t, n3)
		return strings.Count(log, refusedLine) == before+1, lastLine(log)
	})
	twoVoters(t, sc, n1, n2)
	for _, nd := range []*ClusterNode{n1, n2} {
		if m, ok := nd.MustStatus().member(n3.ID); ok {
			t.Errorf("%s lists the removed, restarted n3: %+v", nd.ID, m)
		}
	}
	mustWrite(t, n1, "10.77.0.4")

	// The same data dir under another node ID: its certificate names n3,
	// so it cannot get one for the new ID (that needs a write, through a
	// leader it cannot reach), its gossip key is dead: it stays out.
	n3.Stop()
	setArg(n3, "--node-id", "n3-renamed")
	n3.Launch()
	waitFor(t, clusterFormTimeout, "n3-renamed is up (without a leader)", func() (bool, string) {
		log := readLog(t, n3)
		return strings.Contains(log, `msg="halapi node started" node_id=n3-renamed`), lastLine(log)
	})
	twoVoters(t, sc, n1, n2)
	for _, nd := range []*ClusterNode{n1, n2} {
		st := nd.MustStatus()
		if _, ok := st.member("n3-renamed"); ok {
			t.Errorf("%s lists n3-renamed: %s", nd.ID, st)
		}
	}
	mustWrite(t, n2, "10.77.0.5")
}

// TestHardeningMembersFakeGossip: members holding the real gossip key but
// no node certificate never become voters (whatever cluster address they
// gossip), the cluster keeps its leader after they leave; a voter whose
// certificate is revoked is removed by the leader, and after a `cluster
// remove` the old gossip key no longer opens gossip.
func TestHardeningMembersFakeGossip(t *testing.T) {
	sc := startSecureCluster(t, 3)
	n1, n2, n3 := sc.Nodes[0], sc.Nodes[1], sc.Nodes[2]
	oldKey := gossipKeyOf(t, n1)

	// Three fakes: with them as voters the quorum would be 4 of 6, lost
	// when they leave. One gossips an address where nothing listens, one
	// n2's cluster address, one a TLS listener with a self-signed "node"
	// certificate.
	selfSigned := fakeTLSListener(t, "fake-c")
	fakes := []*memberlist.Memberlist{
		startFakeMember(t, "fake-a", oldKey, net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortOn(t, "127.0.0.1", false))), n1.GossipAddr),
		startFakeMember(t, "fake-b", oldKey, n2.ClusterAddr, n1.GossipAddr),
		startFakeMember(t, "fake-c", oldKey, selfSigned, n1.GossipAddr),
	}
	for _, f := range fakes {
		if f == nil {
			t.FailNow()
		}
	}
	waitFor(t, gossipSettle, "the fakes are alive gossip members", func() (bool, string) {
		st, err := n1.Status()
		if err != nil {
			return false, err.Error()
		}
		for _, id := range []string{"fake-a", "fake-b", "fake-c"} {
			if m, ok := st.member(id); !ok || m.State != "alive" {
				return false, st.String()
			}
		}
		return true, ""
	})
	// The leader tried each fake and refused it.
	var fakeVoters string
	waitFor(t, clusterFormTimeout, "the leader refuses each fake as a voter", func() (bool, string) {
		if st, err := n1.Status(); err == nil && !slices.Equal(voters(st), []string{"n1", "n2", "n3"}) {
			fakeVoters = st.String()
			return true, ""
		}
		var all string
		for _, nd := range sc.Nodes {
			all += readLog(t, nd)
		}
		for _, id := range []string{"fake-a", "fake-b", "fake-c"} {
			if !strings.Contains(all, "not made a raft voter") || !strings.Contains(all, "node="+id) {
				return false, "no refusal logged for " + id
			}
		}
		return true, ""
	})
	if fakeVoters != "" {
		t.Fatalf("gossip members without a node certificate became raft voters: %s", fakeVoters)
	}
	for _, nd := range sc.Nodes {
		st := nd.MustStatus()
		if v := voters(st); !slices.Equal(v, []string{"n1", "n2", "n3"}) {
			t.Errorf("%s: voters %v with fake members around, want n1 n2 n3: %s", nd.ID, v, st)
		}
	}
	for _, f := range fakes {
		_ = f.Shutdown() // gone without a leave: dead to the others
	}
	waitFor(t, clusterFormTimeout, "the fakes are gone", func() (bool, string) {
		st, err := n1.Status()
		if err != nil {
			return false, err.Error()
		}
		for _, m := range st.Members {
			if strings.HasPrefix(m.ID, "fake-") && m.State == "alive" {
				return false, st.String()
			}
		}
		return true, ""
	})
	sc.WaitStable(clusterFormTimeout, n1, n2, n3)
	mustWrite(t, n2, "10.78.0.1")

	// A voter whose node certificate is revoked is taken out by the
	// leader; `cluster remove` then rotates the gossip key on n1 and n2.
	n2.MustCLI("cert", "revoke", "--name", n3.ID)
	twoVoters(t, sc, n1, n2)
	waitFor(t, clusterFormTimeout, "cluster remove n3", func() (bool, string) {
		out, err := n1.CLI("cluster", "remove", n3.ID)
		if err != nil {
			return false, err.Error()
		}
		return true, out
	})
	waitFor(t, gossipSettle, "n1 and n2 persist the new gossip key", func() (bool, string) {
		k1, k2 := gossipKeyFile(t, n1), gossipKeyFile(t, n2)
		return len(k1) == 1 && len(k2) == 1 && bytes.Equal(k1[0], k2[0]) && !bytes.Equal(k1[0], oldKey),
			fmt.Sprintf("n1 has %d keys, n2 %d", len(k1), len(k2))
	})
	// Each step was confirmed by both voters before the next one.
	if log := readLog(t, n1); strings.Contains(log, "did not confirm") {
		t.Errorf("the key rotation went on without a voter's confirmation (a member could lose gossip)")
	}
	for _, nd := range []*ClusterNode{n1, n2} {
		fi, err := os.Stat(filepath.Join(nd.DataDir, "pki", "gossip.key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: gossip.key mode %v (%v), want 0600", nd.ID, fi.Mode().Perm(), err)
		}
	}
	newKey := gossipKeyOf(t, n1)

	// The old key no longer opens gossip; the new one does (and even then
	// the member is no voter).
	if f := joinFakeMember(t, "fake-old", oldKey, n1.ClusterAddr, n1.GossipAddr); f.err == nil {
		t.Errorf("a member with the old gossip key joined gossip after cluster remove")
	}
	f := joinFakeMember(t, "fake-new", newKey, n1.ClusterAddr, n1.GossipAddr)
	if f.err != nil {
		t.Fatalf("control: a member with the new gossip key cannot join: %v", f.err)
	}
	waitFor(t, gossipSettle, "n2 sees fake-new, not fake-old", func() (bool, string) {
		st, err := n2.Status()
		if err != nil {
			return false, err.Error()
		}
		m, ok := st.member("fake-new")
		_, old := st.member("fake-old")
		return ok && m.State == "alive" && !old, st.String()
	})
	twoVoters(t, sc, n1, n2)
	_ = f.ml.Shutdown()
	mustWrite(t, n1, "10.78.0.2")
}

// ---------------------------------------------------------------------------
// helpers

func readLog(t testing.TB, nd *ClusterNode) string {
	t.Helper()
	b, err := os.ReadFile(nd.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func voters(st clusterStatus) []string {
	var v []string
	for _, m := range st.Members {
		if m.Role == "leader" || m.Role == "follower" {
			v = append(v, m.ID)
		}
	}
	slices.Sort(v)
	return v
}

// twoVoters waits until a and b both list exactly a and b as voters with a
// leader among them.
func twoVoters(t testing.TB, sc *secureCluster, a, b *ClusterNode) {
	t.Helper()
	want := []string{a.ID, b.ID}
	slices.Sort(want)
	waitFor(t, clusterFormTimeout, fmt.Sprintf("exactly %v are voters, with a leader", want), func() (bool, string) {
		var views []string
		for _, nd := range []*ClusterNode{a, b} {
			st, err := nd.Status()
			if err != nil {
				return false, err.Error()
			}
			views = append(views, st.String())
			if !slices.Equal(voters(st), want) || (st.Leader != a.ID && st.Leader != b.ID) {
				return false, strings.Join(views, "; ")
			}
		}
		return true, ""
	})
}

// mustWrite adds a decision through nd (retrying while a leader settles).
func mustWrite(t testing.TB, nd *ClusterNode, ip string) {
	t.Helper()
	waitFor(t, clusterFormTimeout, "a write through "+nd.ID, func() (bool, string) {
		_, err := nd.CLI("decisions", "add", "-i", ip, "-d", "1h")
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
}

func setArg(nd *ClusterNode, flag, value string) {
	for i := 0; i+1 < len(nd.ExtraArgs); i++ {
		if nd.ExtraArgs[i] == flag {
			nd.ExtraArgs[i+1] = value
			return
		}
	}
	nd.ExtraArgs = append(nd.ExtraArgs, flag, value)
}

// serveMustExit runs nd's serve command line with --node-id id and
// expects it to exit non-zero within joinRefusedTimeout; it returns the
// output.
func serveMustExit(t testing.TB, nd *ClusterNode, id string) string {
	t.Helper()
	extra := slices.Clone(nd.ExtraArgs)
	for i := 0; i+1 < len(extra); i++ {
		if extra[i] == "--node-id" {
			extra[i+1] = id
		}
	}
	args := append([]string{"serve", "--data-dir", nd.DataDir, "--listen", nd.Addr}, extra...)
	out, timedOut, err := runUntilExit(joinRefusedTimeout, args...)
	switch {
	case timedOut:
		t.Fatalf("the removed node restarted as %s kept running for %s:\n%s", id, joinRefusedTimeout, out)
	case err == nil:
		t.Fatalf("the removed node restarted as %s exited 0:\n%s", id, out)
	}
	return out
}

// clusterStatusRPC opens nd's cluster port with a node certificate, as a
// peer does (mTLS, service byte, one status RPC) and returns the first
// error.
func clusterStatusRPC(caFile, certFile, keyFile, addr string) error {
	c, err := dialCluster(caFile, certFile, keyFile, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return statusRPC(c)
}

// dialCluster opens the RPC service of a cluster port with a node
// certificate (mTLS, service byte).
func dialCluster(caFile, certFile, keyFile, addr string) (net.Conn, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool,
		ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{2}); err != nil { // the RPC service
		c.Close()
		return nil, err
	}
	return c, nil
}

// statusRPC sends one status RPC on c and reads the answer.
func statusRPC(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte{3, 0, 0, 0, 0}); err != nil { // status, empty payload
		return err
	}
	r := bufio.NewReader(c)
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return err
	}
	resp := make([]byte, binary.BigEndian.Uint32(l[:]))
	if _, err := io.ReadFull(r, resp); err != nil {
		return err
	}
	if !bytes.Contains(resp, []byte(`"status"`)) {
		return fmt.Errorf("unexpected answer %s", resp)
	}
	return nil
}

// stepRenew is step-ca's POST /renew with the certificate as TLS client
// certificate; it returns the status and body.
func stepRenew(t testing.TB, caFile, certFile, keyFile, apiAddr string) (int, []byte) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: callTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	defer client.CloseIdleConnections()
	resp, err := client.Post("https://"+apiAddr+"/renew", "application/json", nil)
	if err != nil {
		t.Fatalf("/renew: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body
}

// gossipKeyFile returns the keys of nd's DATA/pki/gossip.key, primary first.
func gossipKeyFile(t testing.TB, nd *ClusterNode) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(nd.DataDir, "pki", "gossip.key"))
	if err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	for line := range strings.FieldsSeq(string(b)) {
		k, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			t.Fatalf("%s gossip.key: %v", nd.ID, err)
		}
		keys = append(keys, k)
	}
	return keys
}

func gossipKeyOf(t testing.TB, nd *ClusterNode) []byte {
	t.Helper()
	keys := gossipKeyFile(t, nd)
	if len(keys) == 0 {
		t.Fatalf("%s: empty gossip.key", nd.ID)
	}
	return keys[0]
}

// fakeMeta is what a fake member gossips: halapi's member metadata
// (cluster address, "has raft state", start time).
type fakeMeta []byte

func (m fakeMeta) NodeMeta(int) []byte                  { return m }
func (fakeMeta) NotifyMsg([]byte)                       {}
func (fakeMeta) GetBroadcasts(int, int) [][]byte        { return nil }
func (fakeMeta) LocalState(bool) []byte                 { return nil }
func (fakeMeta) MergeRemoteState(buf []byte, join bool) {}

type fakeMember struct {
	ml  *memberlist.Memberlist
	err error
}

// joinFakeMember starts a memberlist node named name with gossip key key
// that claims raftAddr as its cluster port and joins join.
func joinFakeMember(t testing.TB, name string, key []byte, raftAddr, join string) fakeMember {
	t.Helper()
	meta, _ := json.Marshal(map[string]any{"r": raftAddr, "s": true, "t": time.Now().UnixNano()})
	cfg := memberlist.DefaultLANConfig()
	cfg.Name = name
	cfg.BindAddr, cfg.AdvertiseAddr = "127.0.0.1", "127.0.0.1"
	cfg.BindPort = freePortOn(t, "127.0.0.1", true)
	cfg.AdvertisePort = cfg.BindPort
	cfg.ProbeInterval, cfg.ProbeTimeout, cfg.GossipInterval = 500*time.Millisecond, 250*time.Millisecond, 100*time.Millisecond
	cfg.Delegate = fakeMeta(meta)
	cfg.Logger = log.New(io.Discard, "", 0)
	cfg.TCPTimeout = 3 * time.Second
	kr, err := memberlist.NewKeyring(nil, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keyring = kr
	ml, err := memberlist.Create(cfg)
	if err != nil {
		t.Fatalf("fake member %s: %v", name, err)
	}
	t.Cleanup(func() { _ = ml.Shutdown() })
	_, err = ml.Join([]string{join})
	return fakeMember{ml: ml, err: err}
}

func startFakeMember(t testing.TB, name string, key []byte, raftAddr, join string) *memberlist.Memberlist {
	t.Helper()
	f := joinFakeMember(t, name, key, raftAddr, join)
	if f.err != nil {
		t.Errorf("fake member %s with the real gossip key cannot join: %v", name, f.err)
		return nil
	}
	return f.ml
}

// fakeTLSListener accepts TLS on a loopback port with a self-signed
// certificate that looks like a node certificate (CN name, OU node-ou)
// and returns its address.
func fakeTLSListener(t testing.TB, name string) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name, OrganizationalUnit: []string{"node-ou"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}
