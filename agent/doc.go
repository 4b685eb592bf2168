// Package agent is the client side of halapi: `halapi agent run`, the
// local failover proxy that lets unmodified CrowdSec clients (crowdsec's
// agent, cscli, go-cs-bouncer based bouncers) survive the loss of the
// node they use. (The admin-socket client the CLI uses is admin.Client.)
//
// # What it owns
//
//   - The proxy (proxy.go): a loopback listener that buffers each request
//     (bounded, 64 MiB), sends it to the preferred node and moves it to
//     another node on a refused or reset connection, on a node whose
//     health check fails while the request is in flight (a hung node), or
//     on a 502/503/504. Reads and the writes the nodes deduplicate still
//     unanswered after 1 s are also sent to the next node (hedging: a live
//     follower can be stuck forwarding to a hung leader); the first answer
//     wins; deduplicated writes are hedged in rounds, reads once. While
//     every node answers 5xx (no leader yet) it goes round for up to 20 s
//     before passing the last answer on. Every write (not GET/HEAD) carries an
//     Idempotency-Key, kept across attempts; the nodes turn it into the
//     raft request ID bound to the client's identity, so a write replayed
//     on another node is applied once (lapi/idempotency.go, fsm dedup).
//   - The relay (relay.go), the hot path: the first attempt goes to the
//     preferred node from the handler's goroutine over the node's pool of
//     keep-alive connections, written and parsed there (no goroutine,
//     channel or timer per request); a failure, a 502/503/504, or no
//     answer by the hedge time hands it to the general path above as its
//     first attempt. `--procs` (GOMAXPROCS, default 1) keeps idle threads
//     from being woken per request. agentbench measures it.
//   - The identity (identity.go): the host's enrolled certificate, reloaded
//     when its files change and renewed through the cluster's step-CA
//     /renew at two thirds of its lifetime (same key, file rewritten).
//   - Node knowledge: the --server URLs (never forgotten) plus the
//     cluster's member list (GET /halapi/v1/members, read with the host's
//     enrolled certificate or a bouncer API key), refreshed every 10 s;
//     at most 64 nodes; only http(s)://host:port URLs with a routable host.
//   - Health: GET /health on every node every 250 ms (600 ms timeout) over
//     the keep-alive pool of the retries and hedges (the relay has its own). The preferred
//     node is kept while healthy (warm connections, the bouncer's cursor
//     on that node) and otherwise replaced by the healthy node with the
//     lowest round trip.
//   - Credentials pass through untouched (X-Api-Key, Authorization, the
//     token query parameter). A client that presents, on the agent's TLS
//     listener, a certificate with the key of the agent's identity is sent
//     upstream with that identity; any other client certificate is
//     refused, since the agent cannot present it.
//   - The unix socket listener (socket_unix.go, `--socket`): the same
//     handler for the clients that take a path as their LAPI URL
//     (crowdsec's apiclient: the crowdsec agent with a password, cscli;
//     not go-cs-bouncer v0.0.21, which cannot dial one). Created 0660
//     (umask set around bind), optionally given a group; a socket file in
//     the way is removed only if nobody listens on it (a stale one), a
//     live socket or another file is refused; removed on close.
//   - Setup (setup.go): the local TLS listener's certificate, the clients'
//     CA bundle and the agent's config file, for `halapi agent enroll`.
//   - Metrics (halapi_agent_*) and /status on its own loopback listener.
//
// # What it must not do
//
//   - Import the server packages (fsm, cluster, lapi, pki): it speaks
//     HTTP like any client. Route names and the header are duplicated
//     here on purpose (MembersPath, IdempotencyHeader).
//   - Present the host's certificate for a request that carries its own
//     credential (a certificate decides over an API key on the node), or
//     for a client that did not prove it holds the key.
//   - Retry after any byte of an answer went to the client; retry a
//     4xx or a 500 (they are answers, and CrowdSec's 500s are client
//     errors); hedge a write the nodes do not deduplicate (login,
//     registration, heartbeat); keep request bodies beyond the request.
//   - Listen off loopback (the command refuses it): a node sees relayed
//     requests as coming from this host. (A unix socket is local by
//     nature; its mode and group say who on this host may use it.)
//   - Remove a socket file someone still listens on, or a file that is
//     not a socket.
//   - Log or record secrets: /status shows paths without their query.
package agent
