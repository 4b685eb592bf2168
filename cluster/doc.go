// Package cluster owns the raft node and the membership around it: the
// raft-boltdb/v2 log and stable store, the file snapshot store, one TCP
// cluster port multiplexing raft and an internal RPC service (write
// forwarding, removal, status), memberlist gossip for discovery, join and
// --bootstrap-expect, the leader's reconcile loop (add alive members, remove
// members gone longer than the dead-node timeout while a quorum remains),
// the write path (stamp the leader's time on a command, apply it — on a
// follower, forward it — and wait until the local FSM has applied it),
// leadership notifications (after a barrier, so a new leader acts on fully
// applied state) and raft metrics. Securing the port (mTLS) is injected by
// the caller through Config.WrapServer/WrapClient; gossip is encrypted with
// Config.GossipKey.
//
// It must not know HTTP routes or CrowdSec semantics: it moves opaque
// fsm.Commands.
package cluster
