// Package datadir is a node's data dir as a whole: the lock that keeps a
// second process out, its permissions, and the opening sequence that
// refuses a start before anything is written. What lives inside belongs
// to its owner: raft/ and the removal marker to cluster, pki/ to pki, the
// admin socket to admin.
//
// # What it owns
//
//   - LockFile (DATA/halapi.lock): an exclusive flock held while a node
//     serves, and by the offline commands (cluster restore, cluster
//     recover, import --node-id), so that none of them writes a data dir a
//     running node uses (e2e TestStartupRefusesDataDirInUse). No-op where
//     flock does not exist.
//   - Protect: umask 077 for everything the process writes from then on,
//     the data dir 0700, raft/ and pki/ 0700/0600 (public *.crt aside).
//   - Open: create (0700) and lock the data dir, run the caller's refusals,
//     and on a refusal release it and remove it if Open created it: a
//     refused start leaves nothing behind.
//
// # What it must not do
//
//   - Know what the files inside mean (cluster.HasState, pki.HasIdentity
//     answer that).
package datadir
