package cluster

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Walking down the log for the last command must not change the entries
// raft's LogCache holds. A cached configuration entry above a command that
// only BoltDB holds is the case that broke: the command's bytes were
// decoded into the configuration's buffer, which the leader then sent to
// a joining node (it panicked decoding the configuration).
func TestLastCommandLeavesCachedEntriesIntact(t *testing.T) {
	store, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(t.TempDir(), "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// entry 1: a command, written to the store only (not through the cache)
	cmd := bytes.Repeat([]byte{'t'}, 100)
	if err := store.StoreLog(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: cmd}); err != nil {
		t.Fatal(err)
	}
	cache, err := raft.NewLogCache(1, store)
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{
		{ID: "n1", Address: "127.0.0.1:7001", Suffrage: raft.Voter},
		{ID: "n2", Address: "127.0.0.1:7002", Suffrage: raft.Voter},
		{ID: "n3", Address: "127.0.0.1:7003", Suffrage: raft.Voter},
	}})
	want := append([]byte(nil), conf...)
	// entry 2: a configuration, stored through the cache (cached)
	if err := cache.StoreLog(&raft.Log{Index: 2, Term: 1, Type: raft.LogConfiguration, Data: conf}); err != nil {
		t.Fatal(err)
	}
	idx, ok := lastCommandAtOrBelow(cache, 2)
	if !ok || idx != 1 {
		t.Fatalf("last command at or below 2: %d, %v; want 1", idx, ok)
	}
	var got raft.Log
	if err := cache.GetLog(2, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, want) {
		t.Fatalf("the cached configuration entry changed: %q", got.Data)
	}
	raft.DecodeConfiguration(got.Data) // panics on damage, as raft does
}
