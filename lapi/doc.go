// Package lapi owns the CrowdSec Local API of one node: the gorilla/mux
// routes of ../shared/spec/lapi.md, authentication (JWT for machines,
// API keys for bouncers), request decoding and validation, profile
// evaluation (lapi/profiles), the wire shapes (lapi/models), Prometheus
// metrics, the admin API served on the node's unix socket, the leader-only
// retention job and the coalescing of "last seen" writes.
//
// Reads (bouncer queries, streams, alert lists) are answered from the local
// FSM; writes are built into fsm.Commands and submitted through the
// Cluster interface, and the answer is sent only once the command is
// applied locally (read-your-writes).
//
// It must not touch raft directly, and it must never log a secret
// (passwords, API keys, JWTs).
package lapi
