// Package cluster owns the raft node and the membership around it: the
// raft-boltdb/v2 log and stable store, the file snapshot store, one TCP
// cluster port multiplexing raft and an internal RPC service (write
// forwarding, removal, status, the leader's commit index for freshness
// checks, followers' coalesced touches relayed to the leader's sink so the
// cluster writes one Touch entry per interval), memberlist gossip for discovery (with a replaceable keyring),
// join and --bootstrap-expect, the leader's reconcile loop (add alive
// members that pass Config.VerifyPeer — in a secure cluster, a recorded,
// unrevoked node certificate presented on the address they gossip; remove
// members gone longer than the dead-node timeout, or whose certificates
// were revoked, while a quorum remains), the write path (validate a
// command, gate types some voter does not advertise, stamp the leader's
// time, apply it — on a follower, forward it, combining the writes that
// wait behind one in flight into one RPC, and the leader decodes and
// validates what it is sent before raft.Apply — and wait until the local
// FSM has applied it; entries appended are counted per command), the
// leader loop (a barrier retried until it
// succeeds, then registered leader jobs with a per-term context and
// backoff restarts), and raft metrics. Securing the port (mTLS) is
// injected by the caller through Config.WrapServer/WrapClient.
//
// It must not know HTTP routes or CrowdSec semantics, and must not commit
// an entry it has not decoded and validated.
package cluster
