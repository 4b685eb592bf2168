package cluster

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// A raft log written by a build with BoltDB's defaults (free list synced,
// array free list) opens with logStoreOptions, and the other way round,
// with every entry intact after the log was truncated (freed pages).
func TestLogStoreOptionsOpenEitherWay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	big := make([]byte, 300<<10) // overflow pages, freed by the truncation
	open := func(o *bbolt.Options) *raftboltdb.BoltStore {
		t.Helper()
		s, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: o})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	write := func(s *raftboltdb.BoltStore, from, to uint64) {
		t.Helper()
		for i := from; i <= to; i++ {
			big[0] = byte(i)
			if err := s.StoreLog(&raft.Log{Index: i, Term: 1, Data: append([]byte(nil), big...)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(s *raftboltdb.BoltStore, from, to uint64) {
		t.Helper()
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if first != from || last != to {
			t.Fatalf("log holds %d..%d, want %d..%d", first, last, from, to)
		}
		for i := from; i <= to; i++ {
			var l raft.Log
			if err := s.GetLog(i, &l); err != nil || len(l.Data) != len(big) || l.Data[0] != byte(i) {
				t.Fatalf("entry %d: %v (%d bytes)", i, err, len(l.Data))
			}
		}
	}
	s := open(nil) // BoltDB's defaults, as earlier builds opened it
	write(s, 1, 20)
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(logStoreOptions())
	check(s, 11, 20)
	write(s, 21, 40)
	if err := s.DeleteRange(11, 30); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(nil)
	check(s, 31, 40)
	write(s, 41, 45)
	s.Close()
	s = open(logStoreOptions())
	check(s, 31, 45)
	s.Close()
}
