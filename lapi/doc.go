// Package lapi owns the CrowdSec Local API of one node: the gorilla/mux
// routes of ../shared/spec/lapi.md, authentication (JWT for machines,
// API keys for bouncers), request decoding and validation, profile
// evaluation (lapi/profiles), the wire shapes (lapi/models), Prometheus
// metrics, its routes in the admin API (AdminRoutes: machines, bouncers,
// decisions, alerts, allowlists, flush, profiles, audit; package admin serves the socket),
// its leader jobs (LeaderJobs: JWT key, retention and expiry of
// unvalidated machines), the
// coalescing of "last seen" writes (toucher.go: gathered per node, relayed
// by followers to the leader, one Touch command per interval for the
// cluster), and the bounds on anonymous clients
// (limits.go: connections, body deadlines, JSON depth, registration and
// login throttling, trusted proxies). A refusal (401/403) is confirmed
// against the leader's commit index before it is sent (fresh.go).
//
// Reads (bouncer queries, streams, alert lists) are answered from the local
// FSM; writes are built into fsm.Commands and submitted through the
// Cluster interface, and the answer is sent only once the command is
// applied locally (read-your-writes).
//
// Decision answers are written incrementally in 64 KiB chunks, never
// whole; identical startup streams share one encoding (raw and gzip) with
// a bounded number encoded at once and a scavenger after a storm
// (streamcache.go, streamwrite.go, memory.go). An Idempotency-Key header
// (bounded, bound to the caller's identity and route) becomes the raft
// request ID of the writes the nodes deduplicate (idempotency.go), for
// `halapi agent`'s retries; /halapi/v1/members tells a credentialed client
// the nodes' API URLs. Usage metrics are stored bounded per component and
// aged out by the retention job, as are machines and bouncers not seen
// for the autodelete ages (autodelete.go). The notifications of the
// profiles that match a pushed alert (or a decision added by hand) are
// stored with it (alerts_notify.go); the leader's notify dispatcher sends
// them. The profiles a node evaluates (profilesync.go) are the replicated
// set once `halapi profiles apply` stored one, else the node's own file
// (re-read on SIGHUP) or the default; each request is evaluated against
// one set, and the admin routes include /profiles. RecordAudit (audit.go)
// appends to the replicated audit trail (the web console after each write,
// the admin socket after each CLI write), each field made one bounded
// line; GET /audit lists it.
//
// It must not touch raft directly, and it must never log a secret
// (passwords, API keys, JWTs).
package lapi
