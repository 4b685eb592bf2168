// Package agent owns the client side of halapi: the admin client that the
// CLI uses to reach a node over its unix socket and, with the cluster and
// PKI work, a failover-aware LAPI client and the enrollment of agents and
// bouncers.
//
// It must not import the server packages' internals (fsm, cluster): it
// speaks HTTP like any other client.
package agent
