// Package cluster owns the raft node: the raft-boltdb/v2 log and stable
// store, the file snapshot store, the transport, bootstrap of a fresh data
// dir, the write path (stamp the leader's time on a command, apply it,
// wait until the local FSM has applied it) and leadership notifications
// (delivered after a barrier, so a new leader acts on fully applied state).
//
// Today a node is a one-node cluster (in-process transport unless
// --cluster-listen is given); gossip, joining, write forwarding from
// followers and membership management come with the cluster work.
//
// It must not know HTTP routes or CrowdSec semantics: it moves opaque
// fsm.Commands.
package cluster
