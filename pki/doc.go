// Package pki is halapi's built-in PKI: an embedded step-ca authority
// (github.com/smallstep/certificates, in process) whose whole state lives
// in the replicated FSM, so every node can issue, renew, revoke and check
// revocation.
//
// # What it owns
//
//   - The cluster CA. Bootstrap creates, once, a root and an intermediate
//     (ECDSA P-256, ten years), the key of a JWK provisioner and the gossip
//     key; the first writer wins (SetConfig with IfAbsent), so two nodes
//     racing end up with one CA. Private keys are in the FSM: the FSM is
//     the cluster's trust store, protect the data dir and snapshots.
//   - step's database (db.AuthDB, db.CertificateStorer,
//     db.CertificateRevocationListDB) on the FSM: reads from the local
//     replica, writes through raft. Keys, all under "pki:":
//     pki:ca, pki:gossip-key, pki:gossip-keyring, pki:cert:<serial> (every issued certificate),
//     pki:revoked:<serial>, pki:token:<jti> (a used one-time token, claimed
//     with IfAbsent: a token works once cluster-wide), pki:join:<sha256 of
//     secret> and pki:join-used:<same> (join tokens). Serials are decimal.
//   - Certificates: node certificates (CN node ID, OU node-ou, server and
//     client auth; the Renewer renews them at 2/3 of their lifetime and
//     serves them through GetCertificate), agent and bouncer client
//     certificates (CN name, OU agent-ou / bouncer-ou, client auth), and
//     operator certificates (RoleAdmin: CN the operator's name, OU
//     admin-ou, client auth; issued by `halapi cert issue admin` only,
//     never through a token, with a PKCS#12 for the browser: p12.go). The OU
//     comes from a "halapi" claim in the token that only halapi signs,
//     applied by the provisioner's certificate template.
//   - One-time tokens (NewToken) usable with `step ca certificate` or
//     `halapi agent enroll`, and the step-ca HTTP API (Handler): roots,
//     root/{sha}, sign, renew, rekey, revoke, crl, provisioners.
//   - The CRL: one combined CRL of every revocation in the FSM, signed by
//     the intermediate, regenerated on demand when the revocation set
//     changes. It is derived data, cached in memory by each node.
//   - Join tokens: base64url(root fingerprint ‖ 32-byte secret). Join
//     pins the CA by fingerprint, RedeemJoin spends the token once and
//     hands out a node certificate, the root and the gossip key.
//   - Membership material: VerifyNodePeer (the voter rule: a node
//     certificate recorded in the FSM, CN = node ID, not revoked),
//     RevokeNode (every node certificate of a removed node) and the
//     replicated gossip keyring (pki:gossip-keyring, rotated on removal).
//   - Prune (a leader job): used and expired tokens, long-expired
//     certificates and their revocations.
//   - A node's PKI runtime (Runtime: runtime.go, removal.go, admin.go,
//     metrics.go). Prepare, before the cluster opens: the node's identity
//     on disk, redeeming a join token, a first node's gossip key, a
//     removed node's data dir refused or rejoined; CheckJoin, FirstNode and
//     JoinPlan (join with a token or found alone). ClusterTLS: peer mTLS, gossip key
//     and the voter rule in the cluster config. Start: the ca-bootstrap
//     and ca-prune leader jobs, the local CA once replicated, this node's
//     certificate (obtained, then renewed; WaitCertificate before HTTPS is
//     served), the replicated gossip keyring applied. RemoveMember: `cluster remove` in a secure cluster (out of
//     raft, node certificates revoked, gossip key rotated in three
//     confirmed steps). Its admin routes (AdminRoutes: pki tokens,
//     certificates, revocation, api-info; revocations answer once every
//     reachable node applied them), the step-ca and join routes on the API
//     port (Mount) and the halapi_pki_* metrics (Collector).
//   - TLS policy: PeerTLS (mTLS between nodes, node-ou required, revoked
//     peers refused, connections closed once the peer is revoked) and
//     ClientVerifier (CrowdSec's client-certificate
//     rules, lapi.md §2.4, with revocation checked against the FSM on every
//     request and against an optional CRL file for external CAs;
//     Verify(cs, RoleAdmin) for the web console: the chain re-verified
//     against the cluster root alone, an admin OU, not revoked).
//
// # What it must not do
//
//   - Keep CA state outside the FSM. Nothing a node alone knows may decide
//     whether a certificate or token is valid; the only local state is a
//     node's own identity (its certificate, key, the root and gossip key in
//     its data dir, see SaveIdentity), needed before raft has caught up,
//     and the CRL cache, derived from the FSM.
//   - Log secrets: private keys, one-time tokens, join tokens and the
//     gossip key are never logged (only serials, names and node IDs).
//   - Sign SSH certificates or run ACME/SCEP: only the X.509 JWK flow.
//   - Read clocks inside the FSM: all times it stores are stamped by the
//     node that builds the command.
package pki
