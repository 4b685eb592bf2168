package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crowdsecurity/crowdsec/pkg/models"
	csbouncer "github.com/crowdsecurity/go-cs-bouncer"
)

// Backup and disaster recovery (issue 13), on secure clusters formed with
// join tokens, real processes on loopback.

// opsJoin starts one more secure node that redeems token at via's API
// (gossip join through via) and waits until the nodes of set (which must
// include it: pass nil for "every node started so far that is up") agree
// on a leader and list each other as alive voters. secureCluster.Join
// waits for every node ever started, which a test that killed some cannot.
func opsJoin(sc *secureCluster, token string, via *ClusterNode, set ...*ClusterNode) *ClusterNode {
	sc.t.Helper()

	nd := sc.newNode("--join", via.GossipAddr, "--join-token", token, "--join-api", via.Addr)
	nd.Launch()
	nd.waitHealthy()
	nd.setUp(true)
	set = append(set, nd)
	sc.WaitStable(clusterFormTimeout, set...)
	if !sc.CheckMembersAlive(clusterFormTimeout, set...) {
		sc.t.FailNow()
	}
	return nd
}

// opsLiveBouncer is a go-cs-bouncer LiveBouncer with an API key on nd's
// HTTPS API, trusting caFile.
func opsLiveBouncer(t testing.TB, nd *ClusterNode, key, caFile string) *csbouncer.LiveBouncer {
	t.Helper()

	b := &csbouncer.LiveBouncer{APIKey: key, APIUrl: nd.URL, CAPath: caFile, UserAgent: "e2e-live-bouncer/v0.0.21"}
	if err := b.Init(); err != nil {
		t.Fatalf("LiveBouncer.Init: %v", err)
	}
	return b
}

// opsBanned waits until a bouncer with key sees a ban on ip through nd.
func opsBanned(t testing.TB, nd *ClusterNode, key, caFile, ip string) {
	t.Helper()

	lb := opsLiveBouncer(t, nd, key, caFile)
	waitFor(t, convergeTimeout, nd.ID+" serves the ban on "+ip+" to the bouncer", func() (bool, string) {
		ds, err := tryLiveGet(lb, ip)
		if err != nil {
			return false, err.Error()
		}
		return opsHasBan(ds, ip), "no ban"
	})
}

// opsLogin is the machine login of the crowdsec agent (POST
// /v1/watchers/login) over nd's HTTPS API; it returns the HTTP status.
func opsLogin(t testing.TB, nd *ClusterNode, id, password string) int {
	t.Helper()

	tc, err := nd.TLS()
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: callTimeout, Transport: &http.Transport{TLSClientConfig: tc}}
	body, _ := json.Marshal(map[string]any{"machine_id": id, "password": password, "scenarios": []string{}})
	req, _ := http.NewRequest("POST", nd.URL+"v1/watchers/login", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", watcherUA)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

func opsHasBan(ds []*models.Decision, ip string) bool {
	for _, d := range ds {
		if d.Value != nil && *d.Value == ip && d.Type != nil && *d.Type == "ban" {
			return true
		}
	}
	return false
}

// A backup taken on a follower of a running cluster restores, into an
// empty data dir, a new cluster with the same CA, bouncers, machines and
// decisions; new nodes join it with tokens; a damaged backup is refused
// and leaves the data dir empty.
func TestOpsBackupRestore(t *testing.T) {
	sc := startSecureCluster(t, 2)
	n1, n2 := sc.Node(1), sc.Node(2)
	const key = "ops-backup-bouncer-key-0123456789"
	n1.MustCLI("bouncers", "add", "fw1", "--key", key)
	n1.MustCLI("machines", "add", "agent1", "--password", "ops-pw-1")
	n1.MustCLI("decisions", "add", "-i", "192.0.2.10", "-d", "4h")
	sc.WaitCaughtUp(n1, n2)
	// acknowledged on n1 just before the backup on n2: the backup catches
	// up with the leader first, so it holds it
	n1.MustCLI("decisions", "add", "-i", "192.0.2.12", "-d", "4h")

	backup := filepath.Join(t.TempDir(), "halapi.backup")
	out := n2.MustCLI("cluster", "snapshot", "save", backup)
	if !strings.Contains(out, "Backup written to "+backup) {
		t.Fatalf("snapshot save: %q", out)
	}
	if st, err := os.Stat(backup); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v (want mode 0600: it holds the CA keys)", st, err)
	}
	insp, err := halapiCmd("cluster", "snapshot", "inspect", backup)
	if err != nil || !strings.Contains(insp, "checksums OK") || !strings.Contains(insp, "machines 1, bouncers 1") {
		t.Fatalf("snapshot inspect: %v\n%s", err, insp)
	}
	oldCA, err := os.ReadFile(sc.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	// A write after the backup is not in it.
	n1.MustCLI("decisions", "add", "-i", "192.0.2.99", "-d", "4h")
	sc.stopAll()

	// A damaged backup is refused; nothing is written.
	raw, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.backup")
	raw[len(raw)/2] ^= 0x40
	if err := os.WriteFile(bad, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	badDir := filepath.Join(t.TempDir(), "data")
	if out, err := halapiCmd("cluster", "restore", bad, "--data-dir", badDir, "--node-id", "r1"); err == nil {
		t.Fatalf("damaged backup restored:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(badDir, "raft", "raft.db")); err == nil {
		if out, err := halapiCmd("cluster", "recover", "--data-dir", badDir, "--voters", "r1"); err == nil {
			t.Fatalf("a refused restore left raft state behind:\n%s", out)
		}
	}

	// Restore into a fresh node and start it.
	rc := newSecureCluster(t)
	r1 := rc.newNode()
	out, err = halapiCmd("cluster", "restore", backup, "--data-dir", r1.DataDir, "--node-id", r1.ID, "--cluster-listen", r1.ClusterAddr)
	if err != nil || !strings.Contains(out, "Restored the backup") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if _, err := halapiCmd("cluster", "restore", backup, "--data-dir", r1.DataDir, "--node-id", r1.ID); err == nil {
		t.Fatal("a second restore into the same data dir was accepted")
	}
	rc.CAFile = filepath.Join(r1.DataDir, "pki", "ca.crt")
	r1.Launch()
	waitFor(t, pkiReadyTimeout, "the restored node writes the cluster CA", func() (bool, string) {
		_, err := os.Stat(rc.CAFile)
		return err == nil, "no ca.crt yet"
	})
	r1.waitHealthy()
	r1.setUp(true)
	rc.WaitStable(clusterFormTimeout, r1)
	newCA, err := os.ReadFile(rc.CAFile)
	if err != nil || !bytes.Equal(oldCA, newCA) {
		t.Fatalf("the restored cluster has another CA (%v)", err)
	}
	opsBanned(t, r1, key, rc.CAFile, "192.0.2.10")
	opsBanned(t, r1, key, rc.CAFile, "192.0.2.12")
	if got, err := tryLiveGet(opsLiveBouncer(t, r1, key, rc.CAFile), "192.0.2.99"); err != nil || opsHasBan(got, "192.0.2.99") {
		t.Fatalf("a decision added after the backup came back: %v %v", got, err)
	}
	if _, ok := r1.listedObject("machines", "agent1"); !ok {
		t.Fatal("machine agent1 missing after the restore")
	}
	if code := opsLogin(t, r1, "agent1", "ops-pw-1"); code != http.StatusOK {
		t.Fatalf("login of agent1 on the restored cluster: HTTP %d", code)
	}

	// The restored cluster grows with join tokens and keeps writing.
	r2 := opsJoin(rc, rc.JoinToken(r1), r1, r1)
	opsBanned(t, r2, key, rc.CAFile, "192.0.2.10")
	r2.MustCLI("decisions", "add", "-i", "192.0.2.11", "-d", "4h")
	opsBanned(t, r1, key, rc.CAFile, "192.0.2.11")
}

// After a lost quorum (two of three nodes killed and their disks wiped),
// `cluster recover` makes the survivor a one-node cluster with its data;
// new nodes join it with tokens.
func TestOpsRecoverLostQuorum(t *testing.T) {
	sc := startSecureCluster(t, 3)
	n1, n2, n3 := sc.Node(1), sc.Node(2), sc.Node(3)
	const key = "ops-recover-bouncer-key-0123456789"
	n1.MustCLI("bouncers", "add", "fw1", "--key", key)
	n2.MustCLI("decisions", "add", "-i", "198.51.100.7", "-d", "4h")
	sc.WaitCaughtUp(n1, n2, n3)

	for _, nd := range []*ClusterNode{n2, n3} {
		nd.Kill()
		if err := os.RemoveAll(nd.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	// Without a quorum n1 refuses writes (after waiting for a leader).
	if out, err := n1.CLI("decisions", "add", "-i", "198.51.100.8", "-d", "4h"); err == nil {
		t.Fatalf("a write without a quorum was accepted:\n%s", out)
	}
	// recover refuses to run on a serving node's data dir.
	if out, err := halapiCmd("cluster", "recover", "--data-dir", n1.DataDir, "--voters", "n1"); err == nil || !strings.Contains(err.Error(), "stop the node first") {
		t.Fatalf("recover on a running node: %v\n%s", err, out)
	}
	n1.Stop()
	if out, err := halapiCmd("cluster", "recover", "--data-dir", n1.DataDir, "--voters", "n1,n9"); err == nil || !strings.Contains(err.Error(), "n9=HOST:PORT") {
		t.Fatalf("recover with an unknown voter: %v\n%s", err, out)
	}
	out, err := halapiCmd("cluster", "recover", "--data-dir", n1.DataDir, "--voters", "n1")
	if err != nil || !strings.Contains(out, "after:  n1=") {
		t.Fatalf("recover: %v\n%s", err, out)
	}

	n1.Restart()
	sc.WaitStable(clusterFormTimeout, n1)
	opsBanned(t, n1, key, sc.CAFile, "198.51.100.7")
	n1.MustCLI("decisions", "add", "-i", "198.51.100.9", "-d", "4h")

	n4 := opsJoin(sc, sc.JoinToken(n1), n1, n1)
	n5 := opsJoin(sc, sc.JoinToken(n4), n4, n1, n4)
	for _, nd := range []*ClusterNode{n4, n5} {
		opsBanned(t, nd, key, sc.CAFile, "198.51.100.7")
		opsBanned(t, nd, key, sc.CAFile, "198.51.100.9")
	}
	st := n1.MustStatus()
	for _, gone := range []string{"n2", "n3"} {
		if m, ok := st.member(gone); ok && (m.Role == "leader" || m.Role == "follower") {
			t.Fatalf("%s is still a voter after the recovery: %s", gone, st)
		}
	}
	// The new three-node cluster tolerates the loss of one node again.
	n5.Kill()
	n1.MustCLI("decisions", "add", "-i", "198.51.100.10", "-d", "4h")
	opsBanned(t, n4, key, sc.CAFile, "198.51.100.10")
}
