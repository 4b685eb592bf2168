package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

// A cluster whose voters all apply ImportList takes s2-compressed
// snapshots, and a node that joins after the log was compacted installs
// one and serves the list (issue 9: catch-up from a snapshot).
func TestJoiningNodeInstallsCompressedSnapshot(t *testing.T) {
	nodes := []*testNode{
		{id: "n1", raftAddr: freePort(t), gossipAddr: freeUDPTCPPort(t), dir: t.TempDir()},
		{id: "n2", raftAddr: freePort(t), gossipAddr: freeUDPTCPPort(t), dir: t.TempDir()},
		{id: "n3", raftAddr: freePort(t), gossipAddr: freeUDPTCPPort(t), dir: t.TempDir()},
	}
	open := func(tn *testNode, expect int) {
		n, err := Open(Config{NodeID: tn.id, DataDir: tn.dir, RaftAddr: tn.raftAddr, GossipAddr: tn.gossipAddr,
			Join: []string{nodes[0].gossipAddr}, BootstrapExpect: expect, DeadNodeTimeout: time.Minute, APIURL: "http://" + tn.id,
			TrailingLogs: 1, SnapshotThreshold: 1 << 20}, fsm.New(nil))
		if err != nil {
			t.Fatal(err)
		}
		tn.n = n
	}
	t.Cleanup(func() {
		for _, tn := range nodes {
			if tn.n != nil {
				_ = tn.n.Close()
			}
		}
	})
	open(nodes[0], 2)
	open(nodes[1], 2)
	leader, _ := formed(t, nodes[:2])
	waitFor(t, "every voter advertising ImportList", 10*time.Second, func() bool { return leader.n.Supports(fsm.CmdImportList) })

	ctx := context.Background()
	var values []string
	for i := range 3000 {
		values = append(values, fmtIP(i))
	}
	for i := 0; i < len(values); i += 1000 {
		res, err := leader.n.Apply(ctx, fsm.Command{Type: fsm.CmdImportList, Body: fsm.ImportList{Alert: fsm.Alert{Scenario: "list"},
			Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "l", Until: time.Now().Add(time.Hour).UnixNano(),
			Seed: fsm.UUIDAt(fsm.MustUUID("6f1c2a3b-4d5e-4f60-8172-000000000000"), i), Values: values[i : i+1000]}})
		if err != nil || res.Err() != nil {
			t.Fatalf("apply list: %v %+v", err, res)
		}
	}
	// the membership loop turns compression on (it runs every 500 ms);
	// both nodes snapshot and compact their logs, so whichever leads when
	// n3 joins has to send it a snapshot
	for _, tn := range nodes[:2] {
		waitFor(t, tn.id+": a compressed snapshot on disk", 10*time.Second, func() bool {
			// a new entry each time: raft refuses a snapshot with nothing new
			if _, err := tn.n.Apply(ctx, fsm.Command{Type: fsm.CmdSetConfig, Body: fsm.SetConfig{Key: "k", Value: []byte(tn.id)}}); err != nil {
				t.Logf("%s write: %v", tn.id, err)
			}
			if err := tn.n.Snapshot(); err != nil {
				t.Logf("%s snapshot: %v", tn.id, err)
			}
			return newestSnapshotCompressed(t, tn.dir)
		})
	}

	open(nodes[2], 0)
	waitFor(t, "n3 caught up with the list", 30*time.Second, func() bool {
		return len(nodes[2].n.FSM.Decisions(&fsm.DecisionFilter{Origins: []string{"lists"}}, time.Now())) == len(values)
	})
	if idx := nodes[2].n.raft.Stats()["last_snapshot_index"]; idx == "" || idx == "0" {
		t.Errorf("n3 caught up without installing a snapshot (last_snapshot_index %q)", idx)
	}
}

func fmtIP(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff) }

// newestSnapshotCompressed reports whether the newest state.bin under dir
// is an s2 stream.
func newestSnapshotCompressed(t *testing.T, dir string) bool {
	var newest string
	var when time.Time
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "state.bin" {
			if st, err := os.Stat(p); err == nil && st.ModTime().After(when) {
				newest, when = p, st.ModTime()
			}
		}
		return nil
	})
	if newest == "" {
		return false
	}
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.HasPrefix(b, []byte("\xff\x06\x00\x00S2sTwO"))
}
