// Package fsm owns halapi's replicated state: machines, bouncers, alerts,
// decisions, allowlists and cluster secrets (the JWT signing key), the
// typed commands that change them, the indexes that answer queries (IP
// ranges, dedup groups, expiry order) and snapshot/restore.
//
// Every change arrives as a raft log entry (entry.go): a format byte, a
// one-byte command type, the leader's timestamp (8 bytes, big-endian unix
// ns), then the JSON body. Format 1 has nothing more. Format 2 adds a
// request ID between the time and the body (one length byte, then up to
// 255 bytes of ID); cluster.Node.Apply gives every command one (random, or
// derived from the client's Idempotency-Key by lapi), so every entry it
// writes is format 2. An entry whose ID is among the last 65,536 applied
// is not applied again: the first result is returned (requestids.go; the
// IDs and results are kept in snapshots), so a write retried after a lost
// answer or a leader change is stored once. Both formats are decoded; a
// newer format stops the node (below).
//
// Apply is deterministic: it reads no clock (time comes inside the
// command), does no I/O and draws no randomness (IDs and UUIDs are
// assigned from counters or arrive in the command). Records are immutable once stored; a change
// replaces the pointer (copy-on-write), so queries can return pointers and
// snapshots read a published state while Apply goes on.
//
// # Reads
//
// Readers never wait for an apply. The apply goroutine changes its own
// state and, after each entry or batch, publishes a frozen copy (B-trees
// cloned copy-on-write in O(1), small maps copied on their next write);
// queries load the published copy through an atomic pointer, without a
// lock (state.go). View hands a caller one published state for a whole
// request (EachStartup walks a startup stream without building it;
// StartupWalk splits one into ID ranges that lapi encodes on every core).
//
// # Files
//
// The raft adapter: fsm.go (the FSM type, Apply, ApplyBatch, the skip or
// stop rule, the applied index), predecode.go (decoding off the apply
// goroutine), lowprio.go (which batches apply on internal/lowprio's niced
// thread: big list imports, never an alert batch), snapshot.go (Snapshot, Restore and the snapshot format: JSON lines,
// s2-compressed once SetCompressedSnapshots is on; Restore reads both).
// The state: state.go (the state value, publishing, copy-on-write maps),
// index.go (the decision indexes and their lookups), requestids.go. The
// entry format: entry.go. Commands: commands.go (type numbers and the
// registry table), registry.go (how the table is checked and dispatched),
// cmd_*.go (one file per group of commands: body types, their Validate and
// their apply functions), validate.go (bounds and the checker). Queries:
// query_*.go. The audit trail: cmd_audit.go (a ring of the newest
// AuditCap records, in copy-on-write blocks). Records: types.go, result.go; values: iprange.go, uuid.go,
// clamp.go, decisionjson.go (hand-written JSON for decisions).
//
// # Commands
//
// Every command type is registered once in the table of commands.go with
// its body type and its apply function (registry.go); the table is
// checked when the package is initialised (a type registered twice, or
// without an apply function, stops the program). Decode, Validate, Apply,
// EntryKind and the rolling-upgrade gating (gating.go) all read it. A new
// command needs: a type constant (never renumbered or reused), a body with
// a Validate method, an apply function that writes maps only through the
// copy-on-write accessors (s.wMachines() ...), a gated(...) line in the
// table (a leader writes the new type only once every voter advertises
// it: gating.go), snapshot/restore of any new state, and an example
// in the tests' exampleCommands (TestEveryCommandLeavesPublishedStateUnchanged).
//
// # Validation
//
// Every command body has a Validate method (next to the body in cmd_*.go,
// with the bounds and the checker in validate.go): required names
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
