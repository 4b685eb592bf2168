package cluster

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

func waitMachine(t *testing.T, n *Node, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for n.FSM.Machine(id) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("machine %q not in the FSM", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkState(state io.Reader) error { return fsm.New(nil).Restore(io.NopCloser(state)) }

// A backup taken from a running node restores into an empty data dir as a
// one-node cluster with the same state; a second backup with nothing
// applied in between reuses the newest snapshot; a corrupted or truncated
// archive is refused before anything is written.
func TestBackupRestoreRoundTrip(t *testing.T) {
	n := openNode(t, t.TempDir())
	createMachine(t, n, "a")
	createMachine(t, n, "b")
	var buf bytes.Buffer
	bm, err := n.WriteBackup(context.Background(), &buf, "test")
	if err != nil {
		t.Fatal(err)
	}
	if bm.Index == 0 || bm.Term == 0 || bm.Size == 0 || len(bm.Servers) != 1 || bm.Servers[0].ID != "n1" || !bm.LeaderSynced {
		t.Fatalf("meta %+v", bm)
	}
	var again bytes.Buffer
	if bm2, err := n.WriteBackup(context.Background(), &again, "test"); err != nil || bm2.Index != bm.Index {
		t.Fatalf("second backup with nothing new: %+v %v", bm2, err)
	}
	createMachine(t, n, "c") // not in the backup
	n.Close()

	var state bytes.Buffer
	if got, err := ReadBackup(bytes.NewReader(buf.Bytes()), &state); err != nil || got.Index != bm.Index || int64(state.Len()) != bm.Size {
		t.Fatalf("read back: %+v %v (%d bytes)", got, err, state.Len())
	}

	// Corruptions are refused without touching the target.
	bad := append([]byte(nil), buf.Bytes()...)
	bad[len(bad)/2] ^= 0xff
	for name, data := range map[string][]byte{"flipped byte": bad, "truncated": buf.Bytes()[:buf.Len()-40], "not gzip": []byte("hello")} {
		dir := t.TempDir()
		if _, err := RestoreBackup(RestoreTarget{DataDir: dir, NodeID: "n1"}, bytes.NewReader(data), checkState); err == nil {
			t.Fatalf("%s: restore accepted", name)
		}
		if c, err := LastConfiguration(dir); err != nil || len(c.Servers) != 0 {
			t.Fatalf("%s: target has a configuration after a refused restore: %v %v", name, c, err)
		}
	}

	dir := t.TempDir()
	if _, err := RestoreBackup(RestoreTarget{DataDir: dir, NodeID: "r1"}, bytes.NewReader(buf.Bytes()), checkState); err != nil {
		t.Fatal(err)
	}
	if _, err := RestoreBackup(RestoreTarget{DataDir: dir, NodeID: "r1"}, bytes.NewReader(buf.Bytes()), checkState); err == nil || !strings.Contains(err.Error(), "already holds raft state") {
		t.Fatalf("restore over existing state: %v", err)
	}
	r, err := Open(Config{NodeID: "r1", DataDir: dir}, fsm.New(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	waitMachine(t, r, "a")
	waitMachine(t, r, "b")
	if r.FSM.Machine("c") != nil {
		t.Fatal("a write after the backup is in the restore")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	createMachine(t, r, "d")
	if st := r.Status(ctx); st.Term <= bm.Term || st.AppliedIndex <= bm.Index {
		t.Fatalf("restored cluster goes on below the backup's term/index: %+v (backup %d/%d)", st, bm.Term, bm.Index)
	}
}

// Recover rewrites the configuration of a stopped node and keeps its state,
// also the entries after its last snapshot.
func TestRecoverRewritesConfiguration(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, dir)
	createMachine(t, n, "a")
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	createMachine(t, n, "b")
	n.Close()

	if _, err := Recover(dir, []Voter{{ID: "n1"}, {ID: "n7"}}, fsm.New(nil)); err == nil || !strings.Contains(err.Error(), "n7=HOST:PORT") {
		t.Fatalf("unknown voter without address: %v", err)
	}
	if _, err := Recover(t.TempDir(), []Voter{{ID: "n1"}}, fsm.New(nil)); err == nil || !strings.Contains(err.Error(), "no raft state") {
		t.Fatalf("empty data dir: %v", err)
	}
	conf, err := Recover(dir, []Voter{{ID: "n1"}}, fsm.New(nil))
	if err != nil || len(conf.Servers) != 1 || conf.Servers[0].Address != "local-n1" {
		t.Fatalf("recover: %v %v", conf, err)
	}
	if c, err := LastConfiguration(dir); err != nil || len(c.Servers) != 1 || c.Servers[0].ID != "n1" {
		t.Fatalf("configuration after recover: %v %v", c, err)
	}
	r := openNode(t, dir)
	defer r.Close()
	waitMachine(t, r, "a")
	waitMachine(t, r, "b")
	createMachine(t, r, "c")

	if v, err := ParseVoters([]string{"n1", " n2=10.0.0.2:8300 "}); err != nil || len(v) != 2 || v[1].Address != "10.0.0.2:8300" {
		t.Fatalf("ParseVoters: %v %v", v, err)
	}
	for _, bad := range [][]string{nil, {"n1", "n1"}, {"=1.2.3.4:1"}} {
		if _, err := ParseVoters(bad); err == nil {
			t.Fatalf("ParseVoters(%q) accepted", bad)
		}
	}
}
