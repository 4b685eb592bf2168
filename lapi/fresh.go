package lapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/halapi/halapi/fsm"
)

// Acknowledged must be enforced, everywhere (docs/design/auth.md).
//
// Machine tokens carry a credential generation ("gen") derived from the
// machine's replicated password hash, and, for a certificate login, the
// thumbprint of that certificate ("cnf"); both are checked on every
// request, on every node. Refusals are confirmed against the leader's
// commit index before they are answered, and admin writes that change who
// may authenticate return once every reachable node has applied them.

// freshCluster is what cluster.Node offers beyond Cluster; test fakes and
// a single in-process node may lack it (then local state decides).
type freshCluster interface {
	SyncLeader(ctx context.Context) error
	WaitReplicated(ctx context.Context, index uint64) error
}

const (
	// confirmTimeout bounds the wait for a refusal's confirmation.
	confirmTimeout = 3 * time.Second
	// replicateTimeout bounds how long an admin write waits for slow
	// members (unreachable ones are not waited for at all).
	replicateTimeout = 5 * time.Second
)

// confirmRefusal brings the local state up to the leader's commit index
// before a 401/403 (coalesced across requests, at most one leader round
// trip per 100 ms). It reports whether the caller should check again;
// without a leader it reports false and local state decides.
func (s *Server) confirmRefusal(ctx context.Context) bool {
	fc, ok := s.cluster.(freshCluster)
	if !ok {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	return fc.SyncLeader(ctx) == nil
}

// waitReplicated is called after an admin write that changes who may
// authenticate: it returns once every reachable member applied it.
func (s *Server) waitReplicated(ctx context.Context) {
	fc, ok := s.cluster.(freshCluster)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, replicateTimeout)
	defer cancel()
	if err := fc.WaitReplicated(ctx, s.fsm.AppliedIndex()); err != nil {
		s.log.Warn("admin write acknowledged before every member applied it", "err", err)
	}
}

// credGen is a machine's credential generation: it changes whenever the
// stored password hash does (create, delete and re-create, add --force,
// certificate machines re-created on first use), and every node computes
// the same value from replicated data.
func credGen(m *fsm.Machine) string {
	sum := sha256.Sum256(m.PasswordHash)
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// certThumb is the RFC 8705 x5t#S256 of the request's verified client
// certificate, or "".
func certThumb(r *http.Request) string {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return ""
	}
	sum := sha256.Sum256(r.TLS.VerifiedChains[0][0].Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// tokenRefusal checks a signature-valid token against the current state:
// the machine must exist with the token's credential generation, and a
// token from a certificate login must come with that certificate, still
// valid (not revoked). Tokens without "gen" predate the check: they are
// honoured until their exp while the machine exists, but not refreshed.
// confirmedTokenRefusal is tokenRefusal, confirmed against the leader's
// commit index before it is believed (this node's copy may predate an
// acknowledged machine add or password change).
func (s *Server) confirmedTokenRefusal(r *http.Request, claims map[string]any, id string) string {
	msg := s.tokenRefusal(r, claims, id)
	if msg != "" && s.confirmRefusal(r.Context()) {
		msg = s.tokenRefusal(r, claims, id)
	}
	return msg
}

func (s *Server) tokenRefusal(r *http.Request, claims map[string]any, id string) string {
	m := s.fsm.Machine(id)
	if m == nil {
		return "machine " + id + " not found"
	}
	gen, hasGen := claims["gen"].(string)
	if !hasGen {
		return ""
	}
	if subtle.ConstantTimeCompare([]byte(gen), []byte(credGen(m))) != 1 {
		return "token was revoked: the machine's credentials changed"
	}
	cnf, _ := claims["cnf"].(map[string]any)
	if thumb, _ := cnf["x5t#S256"].(string); thumb != "" {
		if s.certs == nil || !s.hasClientCert(r) || certThumb(r) != thumb {
			return "token is bound to a client certificate this request does not present"
		}
		if _, err := s.certs.Verify(r.TLS, true); err != nil {
			return "TLS auth failed: " + err.Error()
		}
	}
	return ""
}
