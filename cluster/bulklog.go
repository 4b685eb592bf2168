package cluster

import (
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/internal/lowprio"
	"github.com/hashicorp/raft"
)

// bulkLogStore writes batches of raft entries that hold a big list import
// (fsm.HasBulk) on a low-priority thread, like the FSM applies them: on a
// follower, storing a blocklist pull's entries (BoltDB copying megabytes
// into its pages) is, with their apply, most of the CPU the pull costs,
// and at the process's priority it competes with the queries the node
// serves meanwhile. Every other batch (alerts, machines, heartbeats never
// come here) is written on raft's goroutine as before: a write a client
// waits for must not queue behind a thread the kernel runs last.
//
// Raft's goroutine waits for the write either way; only the thread that
// does it changes.
type bulkLogStore struct {
	raft.LogStore
	bulk *lowprio.Runner
}

func (s bulkLogStore) StoreLogs(logs []*raft.Log) error {
	if !fsm.HasBulk(logs) {
		return s.LogStore.StoreLogs(logs)
	}
	var err error
	s.bulk.Run(func() { err = s.LogStore.StoreLogs(logs) })
	return err
}

func (s bulkLogStore) StoreLog(l *raft.Log) error {
	return s.StoreLogs([]*raft.Log{l})
}
