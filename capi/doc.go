// Package capi is halapi's link to the CrowdSec Central API (CAPI): the
// HTTP client (register, login and token cache, retries with backoff and
// jitter, gzip of large bodies) and the Service that pushes signals, pulls
// the community blocklist, third-party blocklists and console allowlists,
// and sends metrics and usage metrics.
//
// What it owns:
//   - every call to CAPI, made from background loops only;
//   - the replicated CAPI state, stored in the FSM through fsm.CmdSetConfig
//     under the "capi:" keys (credentials, cached token, signal push cursor,
//     pull state with blocklist last-pull times, registration requests);
//   - turning pulled data into fsm.CmdImportList (compact, chunked, in
//     address order; fsm.CmdImportDecisions while some voter lacks it),
//     fsm.CmdExpireByValue, fsm.CmdExpireSet and fsm.CmdAllowlistReplace;
//   - the CAPI admin routes (AdminRoutes, served by package admin: status,
//     register, enroll, credentials) and Prometheus metrics.
//
// What it must not do:
//   - run on a follower: the loops start only when the cluster reports
//     leadership (after a barrier) and stop at once, cancelling in-flight
//     calls, when it is lost. Followers only read the replicated state to
//     answer status;
//   - block or slow the LAPI: no request handler ever waits for CAPI, and
//     large pulls are applied in chunks so bouncer reads never stall, and
//     the pull loop runs on a thread below the queries' priority
//     (internal/lowprio);
//   - read clocks or draw randomness inside the FSM: times (decision
//     until, last-pull dates) and UUIDs (or a list's UUID seed) are
//     computed here and travel in the commands;
//   - log secrets (password, token).
//
// Differences from CrowdSec v1.7.6, on purpose:
//   - signals are not handed over in memory (best effort, lost on busy
//     loop or restart): the leader walks stored alerts in ID order from a
//     replicated cursor, so a new leader neither re-sends (beyond one
//     in-flight batch) nor loses signals; a failed batch is retried on the
//     next push instead of being dropped (except on a 4xx that is not
//     about auth or rate limits);
//   - a failed login or pull is retried in the background with backoff;
//     the reference refuses to start without a first successful login;
//   - a blocklist fully re-downloaded (200) soft-expires the values it no
//     longer contains (fsm.CmdExpireSet), so bouncers see them in
//     "deleted" instead of keeping them until their own expiry;
//   - If-Modified-Since uses the list's Last-Modified answer when present
//     (else the download time).
//
// PAPI (the console's polling API, spec §7) is out of scope: the token's
// organization_id and subscription_type claims are shown in the status,
// nothing polls papi_url, and deleted-decision sync is not sent.
package capi
