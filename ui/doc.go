// Package ui is a node's web console: server-rendered pages under /ui/ on
// the node's HTTPS API listener (or --ui-listen), for operators only.
//
// # Data flow
//
//   - Reads of the big lists (decisions, alerts) come straight from the
//     FSM's published state (fsm.FSM.Decisions with Offset/Limit,
//     fsm.FSM.Alerts with Limit): a page of 100 rows costs the walk to
//     its offset, never a copy or a JSON round trip of the whole list.
//   - Everything else, reads and every write, goes through the node's
//     admin API (Config.Admin, the http.Handler admin.Handler builds),
//     called in-process: a ban added on the page is the same raft command
//     as `halapi decisions add`, an unban the same as `halapi decisions
//     delete`, a revocation the same as `halapi cert revoke`.
//   - Live updates: /ui/events streams server-sent events from one
//     watcher per console that wakes on every applied raft index
//     (fsm.FSM.WaitForIndex) and, when nothing is applied, once a second
//     reads the cluster status for a leader change. The page's script
//     then re-fetches the page and swaps the regions marked data-live
//     (unless the operator is using them).
//
// # Access
//
//   - Sign-in by a one-time login link (`halapi ui login`, the admin route
//     LoginRoute: the token is kept hashed, bounded, single use, expiring)
//     or by a client certificate Config.CertIdentity accepts (a POST from
//     the login page). Either creates a session of this node only (in
//     memory, bounded, expiring; cookie halapi_ui: HttpOnly, Secure unless
//     plain HTTP, SameSite=Strict).
//   - An unauthenticated request gets the login page with 401 (the static
//     assets excepted), /ui/events a bare 401.
//   - Every POST carries the session's CSRF token (form field csrf, else
//     403); a POST with a foreign Origin is refused; form bodies are
//     bounded (64 KiB, 1100 values).
//   - Every write logs one info line (who, action, target) and calls
//     Config.Audit; no secret (login token, enrollment token, cookie) is
//     ever logged.
//   - Strict CSP (default-src 'none', scripts and styles from /ui/static
//     only), frame-ancestors 'none', referrer same-origin (a
//     browser then sends the page's Origin on a form POST, which the CSRF
//     check needs, and no referrer leaves the console): a page makes no
//     third-party request. Templates and assets are embedded.
//
// # What it must not do
//
//   - Write to the FSM or raft directly: writes go through Config.Admin.
//   - Keep a secret in clear: tokens and session IDs are stored hashed.
package ui
