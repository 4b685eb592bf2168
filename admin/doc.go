// Package admin is a node's admin API: the unix socket every `halapi`
// command but serve talks to, both ends of it.
//
// # What it owns
//
//   - The socket (server.go): DATA/admin.sock, mode 0600 inside the 0700
//     data dir, so only the node's user (and root) can open it; whoever
//     can is root on the node, so requests carry no other credential. On
//     Linux the peer's uid is read too (SO_PEERCRED) and anyone but root
//     and the node's user gets 403, should a mode ever be widened.
//     Listen removes a stale socket of a previous run, Shutdown removes it.
//   - The router: every route lives under Prefix (/admin/v1); path
//     variables reach handlers decoded (the CLI escapes them); an unknown
//     route answers 404 {"message": "unknown admin route"}; a panicking
//     handler answers 500 and is logged, the node keeps serving.
//   - The answer shape: JSON bodies, errors {"message": "..."} like the
//     LAPI's (WriteJSON, WriteError, WriteApplyError), so the client turns
//     any error into one line for the CLI.
//   - The routes of the cluster (cluster.go: status, snapshot, member
//     removal, backup), since package cluster knows no HTTP.
//   - The client (client.go) the CLI uses: Do for JSON calls (30 s),
//     Download for streamed answers (no timeout).
//   - The runtime's profiles and traces (debug.go, DebugRoutes, `halapi
//     debug`): under /admin/v1/debug/pprof, a CPU profile and an
//     execution trace over ?seconds= (1..120, else 400), one of them at a
//     time per node (409 while one runs), and the named profiles heap,
//     allocs, goroutine, mutex, block, threadcreate (?debug=0 pprof, 1 or
//     2 text; goroutine debug=2 is every stack as in a panic). On the
//     socket only: serve.go adds DebugRoutes to the socket's handler and
//     not to the one the web console calls in-process (adminHandlers),
//     since a capture costs the node CPU and a dump shows its internals.
//     Written on runtime/pprof and runtime/trace: net/http/pprof is not
//     imported, because its init registers /debug/pprof/ on
//     http.DefaultServeMux, which no listener may ever come to serve.
//   - The audit of the CLI's writes (audit.go, HandlerWithAudit): every
//     successful request but a GET or HEAD is recorded in the replicated
//     audit trail as "cli:uid=N", with the route, its variables and an
//     allow-list of query parameters (never a body).
//
// # Who adds routes
//
// Each package that owns a concern serves its own admin routes and hands
// them to Handler as a Routes function, called with the /admin/v1
// subrouter:
//
//	lapi.Server.AdminRoutes        machines, bouncers, decisions, alerts, allowlists, flush
//	capi.Service.AdminRoutes       capi status, register, enroll, credentials
//	pki.Runtime.AdminRoutes        pki tokens, certificates, revocation, api-info
//	importer.AdminRoutes           import
//	admin.ClusterRoutes            status, snapshot, members, backup
//	ui.Console.AdminRoutes         the web console's one-time login links
//	admin.DebugRoutes              debug/pprof (socket only, not the console's handler)
//
// Adding a route is one line in the owner (r.HandleFunc(path,
// handler).Methods(...)); adding an owner is one more argument to
// admin.Handler in cmd/halapi/serve.go. Handlers write with this
// package's writers (lapi's handlers share the LAPI's writers, which give
// the same shape).
//
// # What it must not do
//
//   - Listen on anything but the unix socket, or loosen its mode.
//   - Import net/http/pprof, or hand DebugRoutes to any handler but the
//     socket's.
//   - Hold the logic of a route: it routes, writes and authenticates by
//     file mode; the owner decides.
//   - Log request bodies (machine passwords, API keys, enrollment keys).
package admin
