package cluster

import (
	"sort"
	"time"
)

// The membership decision: what the leader's reconcile round changes in
// the raft configuration, as a pure function of what it sees (gossip
// members with their state and certificate status, the configuration,
// itself as leader). membership.go gathers the inputs and carries the
// actions out; reconcile_test.go holds the table of cases.
//
// The rules:
//   - an alive member that gossips a cluster address and is not in the
//     configuration at that address becomes a voter, unless an operator
//     removed it and it has not restarted since (a newer Started), or its
//     node certificate is revoked; in a secure cluster only after a fresh
//     successful certificate check of that address (else: verify first);
//   - at most one server is removed per round, never the leader itself,
//     and only while the voters left alive keep a quorum of the voters
//     that remain: first a server whose certificate is revoked, else one
//     gossip has reported gone (dead or left) for at least DeadNodeTimeout.

// cfgServer is one server of the raft configuration.
type cfgServer struct {
	ID, Addr string
	Voter    bool
}

// certStatus is what the leader knows of a member's node certificate.
type certStatus uint8

const (
	// certNotRequired: insecure cluster, gossip membership is enough.
	certNotRequired certStatus = iota
	// certVerified: a fresh check of the member's gossiped cluster address
	// succeeded (see peercheck.go).
	certVerified
	// certUnverified: no fresh success; a check must run before an add.
	certUnverified
)

// seenMember is one gossip member as the decision sees it.
type seenMember struct {
	ID    string
	State MemberState
	// StateFor is how long the member has been in State.
	StateFor time.Duration
	RaftAddr string
	Started  int64
	Cert     certStatus
}

// membershipView is the input of decideMembership.
type membershipView struct {
	Self    string // the leader deciding
	Servers []cfgServer
	Members map[string]seenMember
	// Removed: members an operator removed, with the Started they had.
	Removed map[string]int64
	// Revoked: nodes whose node certificates are revoked.
	Revoked         map[string]bool
	DeadNodeTimeout time.Duration
}

type actionKind uint8

const (
	actAdd    actionKind = iota + 1 // AddVoter(ID, Addr)
	actVerify                       // check ID's certificate at Addr first
	actRemove                       // RemoveServer(ID)
)

func (k actionKind) String() string {
	switch k {
	case actAdd:
		return "add"
	case actVerify:
		return "verify"
	case actRemove:
		return "remove"
	}
	return "?"
}

// removeReason says why a server is removed.
type removeReason uint8

const (
	removeRevoked removeReason = iota + 1
	removeGone
)

type membershipAction struct {
	Kind   actionKind
	ID     string
	Addr   string
	Reason removeReason // actRemove only
	// GoneFor: how long a removed member was gone (removeGone).
	GoneFor time.Duration
}

// quorum is the number of voters a configuration of n voters needs.
func quorum(n int) int { return n/2 + 1 }

// canRemove reports whether id may leave the configuration: the alive
// voters that remain (the leader counts as alive) must be a quorum of the
// voters that remain. Removing a non-voter never costs a quorum.
func (v *membershipView) canRemove(id string) bool {
	voters, alive := 0, 0
	for _, s := range v.Servers {
		if s.ID == id && !s.Voter {
			return true
		}
		if s.ID == id || !s.Voter {
			continue
		}
		voters++
		if m, ok := v.Members[s.ID]; s.ID == v.Self || (ok && m.State == MemberAlive) {
			alive++
		}
	}
	return alive >= quorum(voters)
}

// decideMembership returns the round's actions: adds and verifications
// (by member ID), then at most one removal.
func decideMembership(v membershipView) []membershipAction {
	var out []membershipAction
	inCfg := make(map[string]string, len(v.Servers))
	for _, s := range v.Servers {
		inCfg[s.ID] = s.Addr
	}
	ids := make([]string, 0, len(v.Members))
	for id := range v.Members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := v.Members[id]
		if m.State != MemberAlive || m.RaftAddr == "" || v.Revoked[id] {
			continue
		}
		if started, ok := v.Removed[id]; ok && m.Started <= started {
			continue
		}
		if addr, ok := inCfg[id]; ok && addr == m.RaftAddr {
			continue
		}
		kind := actAdd
		if m.Cert == certUnverified {
			kind = actVerify
		}
		out = append(out, membershipAction{Kind: kind, ID: id, Addr: m.RaftAddr})
	}
	for _, s := range v.Servers {
		if s.ID != v.Self && v.Revoked[s.ID] && v.canRemove(s.ID) {
			return append(out, membershipAction{Kind: actRemove, ID: s.ID, Addr: s.Addr, Reason: removeRevoked})
		}
	}
	for _, s := range v.Servers {
		m, ok := v.Members[s.ID]
		if s.ID == v.Self || !ok || !m.State.Gone() || m.StateFor < v.DeadNodeTimeout {
			continue
		}
		if v.canRemove(s.ID) {
			return append(out, membershipAction{Kind: actRemove, ID: s.ID, Addr: s.Addr, Reason: removeGone, GoneFor: m.StateFor})
		}
	}
	return out
}
