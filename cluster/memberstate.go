package cluster

import "github.com/hashicorp/memberlist"

// MemberState is what gossip says of a member. Status and the members
// route carry it as a plain string (the JSON is unchanged).
type MemberState string

const (
	MemberAlive   MemberState = "alive"
	MemberSuspect MemberState = "suspect"
	MemberDead    MemberState = "dead"
	MemberLeft    MemberState = "left"
	// MemberUnknown: not seen by this node's gossip (a raft server only).
	MemberUnknown MemberState = "unknown"
)

// Gone reports a member gossip has given up on (dead, or left gracefully):
// after DeadNodeTimeout the leader removes it from raft.
func (s MemberState) Gone() bool { return s == MemberDead || s == MemberLeft }

// Reachable reports a member worth asking over the cluster port.
func (s MemberState) Reachable() bool { return s == MemberAlive || s == MemberSuspect }

func memberStateOf(s memberlist.NodeStateType) MemberState {
	switch s {
	case memberlist.StateAlive:
		return MemberAlive
	case memberlist.StateSuspect:
		return MemberSuspect
	case memberlist.StateDead:
		return MemberDead
	case memberlist.StateLeft:
		return MemberLeft
	}
	return MemberUnknown
}

// MemberRole is a member's place in the raft configuration, as Status
// shows it.
type MemberRole string

const (
	RoleLeader   MemberRole = "leader"
	RoleFollower MemberRole = "follower"
	RoleNonvoter MemberRole = "nonvoter"
	// RoleJoining: seen by gossip, not (yet) in the raft configuration.
	RoleJoining MemberRole = "joining"
)
