// Package agent owns the client side of halapi's own tooling: the admin
// client the CLI uses to reach a node over its unix socket. Enrollment of
// agents and bouncers (certificate from a one-time token, ready config
// files) is in pki (Enroll, WriteClientFiles) and exposed as
// `halapi agent enroll`. A failover-aware LAPI client is not built yet:
// CrowdSec's own clients take one URL, and a shared DNS name over the
// nodes (--api-name) covers failover for them.
//
// It must not import the server packages' internals (fsm, cluster): it
// speaks HTTP like any other client.
package agent
