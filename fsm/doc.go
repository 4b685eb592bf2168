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
// snapshots read a published state while Apply goes on.
//
// # Reads
//
// Readers never wait for an apply. The apply goroutine changes its own
// state and, after each entry or batch, publishes a frozen copy (B-trees
// cloned copy-on-write in O(1), small maps copied on their next write);
// queries load the published copy through an atomic pointer, without a
// lock (fsm.go, state.go). View hands a caller one published state for a
// whole request (EachStartup walks a startup stream without building it).
//
// # Validation
//
// Every command body has a Validate method (validate.go): required names
// present, identifiers bounded and free of control characters, strings,
// blobs and lists bounded, IP values of IP scopes parse, times not
// negative. The leader runs it (DecodeValid on forwarded bytes,
// Command.Validate on local commands) before raft.Apply, so nothing
// undecodable or invalid is ever committed. Apply does not validate:
// entries committed by older versions must apply exactly as they did
// there, or the nodes of a mixed cluster would diverge. Apply only has to
// be total — no panic on any body that decodes.
//
// # Entries that do not decode: skip or stop
//
// Every node decodes the same bytes the same way, so skipping an entry
// keeps nodes identical as long as all of them skip it. Hence (EntryKind):
//
//   - a known format and type whose body does not decode, or bytes no
//     version ever wrote (shorter than two bytes, format 0): skipped, with
//     an error logged and a CodeInvalid result;
//   - an unknown type with IgnorableFlag: skipped (the newer version that
//     wrote it declared that older nodes may ignore it);
//   - an unknown type without IgnorableFlag, or an entry format newer than
//     this version's: the node stops (a panic in Apply). Applying or
//     skipping it could make this node's state diverge from upgraded
//     nodes; it must be upgraded first (the Consul rule).
//
// # Results
//
// Apply returns a *Result: created IDs, affected count and, on failure, a
// Code (result.go: OK, NotFound, Conflict, Invalid, Forbidden, Internal)
// with a message for humans. Only the code is ever compared — by the
// cluster RPC, the dedup table, snapshots and the HTTP layer.
//
// # Time
//
// A decision's expiry is clamped in Apply to the entry time plus
// MaxDecisionTTL (100 years), saturating instead of overflowing int64
// nanoseconds.
//
// It must not: touch the network or disk (except writing a snapshot to the
// sink raft hands it), know about HTTP, or read the wall clock in Apply.
package fsm
