// Package fsm owns halapi's replicated state: machines, bouncers, alerts,
// decisions, allowlists and cluster secrets (the JWT signing key), the
// typed commands that change them, the indexes that answer queries (IP
// ranges, dedup groups, expiry order) and snapshot/restore.
//
// Every change arrives as a raft log entry: a version byte, a one-byte
// command type, the leader's timestamp and a JSON body. Apply is
// deterministic: it reads no clock (time comes inside the command), does no
// I/O and draws no randomness (IDs and UUIDs are assigned from counters or
// arrive in the command). Records are immutable once stored; a change
// replaces the pointer (copy-on-write), so queries can return pointers and
// snapshots can clone the B-trees in O(1).
//
// It must not: touch the network or disk (except writing a snapshot to the
// sink raft hands it), know about HTTP, or read the wall clock in Apply.
package fsm
