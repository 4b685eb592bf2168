package lapi

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// MembersPath is the read-only membership route `halapi agent` uses to
// learn every node's API URL. It is outside /v1 (not part of CrowdSec's
// API) and needs a credential a client of this cluster holds: a bouncer
// API key, a machine token, or an agent or bouncer certificate of the
// cluster CA. It exposes node IDs, API URLs, gossip state and raft role:
// no raft or gossip address, no index, nothing about machines or bouncers.
const MembersPath = "/halapi/v1/members"

// MemberView is one node as the membership route shows it.
type MemberView struct {
	ID     string `json:"id"`
	APIURL string `json:"api_url"`
	State  string `json:"state"` // alive, suspect, dead, left, unknown
	Role   string `json:"role"`  // leader, follower, nonvoter, joining
}

// MembersView is the answer of the membership route.
type MembersView struct {
	Self    string       `json:"self"`
	Leader  string       `json:"leader"`
	Members []MemberView `json:"members"`
}

// StatusSource is what the membership route reads (cluster.Node).
type StatusSource interface {
	Status(ctx context.Context) cluster.Status
}

// membersCacheTTL bounds how often the route asks the cluster: a status
// costs one RPC per member, and every agent of the fleet polls it.
const membersCacheTTL = 2 * time.Second

// MembersHandler serves MembersPath from src.
func (s *Server) MembersHandler(src StatusSource) http.Handler {
	var (
		mu     sync.Mutex
		cached MembersView
		at     time.Time
	)
	get := func(ctx context.Context) MembersView {
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() && time.Since(at) < membersCacheTTL {
			return cached
		}
		cctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		st := src.Status(cctx)
		cancel()
		v := MembersView{Self: st.NodeID, Leader: st.Leader, Members: []MemberView{}}
		for _, m := range st.Members {
			if m.APIURL == "" {
				continue
			}
			if u, err := url.Parse(m.APIURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				continue
			}
			v.Members = append(v.Members, MemberView{ID: m.ID, APIURL: m.APIURL, State: m.State, Role: m.Role})
		}
		cached, at = v, time.Now()
		return v
	}
	serve := func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, get(r.Context()))
	}
	jwtServe := s.jwt(serve)
	return s.recoverer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		switch {
		case s.hasClientCert(r):
			if _, err := s.certs.Verify(r.TLS, true); err != nil {
				if _, err := s.certs.Verify(r.TLS, false); err != nil {
					writeErr(w, http.StatusForbidden, "access forbidden")
					return
				}
			}
		case r.Header.Get("X-Api-Key") != "":
			if !s.knownAPIKey(r.Header.Get("X-Api-Key")) {
				writeErr(w, http.StatusForbidden, "access forbidden")
				return
			}
		case r.Header.Get("Authorization") != "":
			jwtServe(w, r)
			return
		default:
			writeErr(w, http.StatusForbidden, "access forbidden")
			return
		}
		serve(w, r)
	}))
}

// knownAPIKey reports whether key belongs to an API-key bouncer, without
// recording anything (no first-contact row, no user agent).
func (s *Server) knownAPIKey(key string) bool {
	if len(key) > MaxAPIKeyLen {
		return false
	}
	h := s.keyHashes.get(key)
	if h == "" {
		h = HashKey(key)
	}
	for _, b := range s.fsm.BouncersByKey(h) {
		if b.AuthType == fsm.AuthAPIKey {
			return true
		}
	}
	return false
}
