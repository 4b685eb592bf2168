package cluster

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// voters3 etc. build a configuration of voters n1..nK at addresses r1..rK.
func votersCfg(k int) []cfgServer {
	out := make([]cfgServer, k)
	for i := range out {
		out[i] = cfgServer{ID: fmt.Sprintf("n%d", i+1), Addr: fmt.Sprintf("r%d", i+1), Voter: true}
	}
	return out
}

func alive(id string) seenMember {
	return seenMember{ID: id, State: MemberAlive, StateFor: time.Hour, RaftAddr: "r" + strings.TrimPrefix(id, "n"), Started: 1}
}

func gone(id string, st MemberState, d time.Duration) seenMember {
	m := alive(id)
	m.State, m.StateFor = st, d
	return m
}

func members(ms ...seenMember) map[string]seenMember {
	out := map[string]seenMember{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

// actions renders decisions compactly: "add n4@r4", "verify n4@r4",
// "remove n3 (gone)", "remove n2 (revoked)".
func actions(as []membershipAction) string {
	var parts []string
	for _, a := range as {
		switch a.Kind {
		case actRemove:
			why := "gone"
			if a.Reason == removeRevoked {
				why = "revoked"
			}
			parts = append(parts, fmt.Sprintf("remove %s (%s)", a.ID, why))
		default:
			parts = append(parts, fmt.Sprintf("%s %s@%s", a.Kind, a.ID, a.Addr))
		}
	}
	return strings.Join(parts, ", ")
}

func TestQuorum(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4} {
		if got := quorum(n); got != want {
			t.Errorf("quorum(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestDecideMembership(t *testing.T) {
	const timeout = 10 * time.Minute
	long, short := timeout+time.Second, timeout-time.Second
	with := func(m seenMember, f func(*seenMember)) seenMember { f(&m); return m }
	cases := []struct {
		name    string
		servers []cfgServer
		members map[string]seenMember
		removed map[string]int64
		revoked []string
		want    string
	}{
		{name: "steady 3-node cluster: nothing to do",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), alive("n3")), want: ""},
		{name: "an alive newcomer is added",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), alive("n3"), alive("n4")), want: "add n4@r4"},
		{name: "newcomers are added in ID order",
			servers: votersCfg(1), members: members(alive("n1"), alive("n3"), alive("n2")), want: "add n2@r2, add n3@r3"},
		{name: "a suspect, dead or left newcomer is not added",
			servers: votersCfg(1),
			members: members(alive("n1"), gone("n2", MemberSuspect, time.Second), gone("n3", MemberDead, time.Second), gone("n4", MemberLeft, time.Second)),
			want:    ""},
		{name: "a member that gossips no cluster address is not added",
			servers: votersCfg(1), members: members(alive("n1"), with(alive("n2"), func(m *seenMember) { m.RaftAddr = "" })), want: ""},
		{name: "a server gossiping a new address is added again at it",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), with(alive("n3"), func(m *seenMember) { m.RaftAddr = "r3b" })),
			want: "add n3@r3b"},
		{name: "a member an operator removed stays out until it restarts",
			servers: votersCfg(2), members: members(alive("n1"), alive("n2"), alive("n3")), removed: map[string]int64{"n3": 1}, want: ""},
		{name: "a removed member that restarted (newer Started) is added again",
			servers: votersCfg(2), members: members(alive("n1"), alive("n2"), with(alive("n3"), func(m *seenMember) { m.Started = 2 })),
			removed: map[string]int64{"n3": 1}, want: "add n3@r3"},
		{name: "secure cluster: an unverified newcomer is verified, not added",
			servers: votersCfg(1), members: members(alive("n1"), with(alive("n2"), func(m *seenMember) { m.Cert = certUnverified })),
			want: "verify n2@r2"},
		{name: "secure cluster: a verified newcomer is added",
			servers: votersCfg(1), members: members(alive("n1"), with(alive("n2"), func(m *seenMember) { m.Cert = certVerified })),
			want: "add n2@r2"},
		{name: "a newcomer with a revoked certificate is neither added nor verified",
			servers: votersCfg(1), members: members(alive("n1"), with(alive("n2"), func(m *seenMember) { m.Cert = certVerified })),
			revoked: []string{"n2"}, want: ""},

		// dead-node removal and quorum arithmetic
		{name: "3 nodes, one gone past the timeout: removed (2 of the 2 left are alive)",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), gone("n3", MemberDead, long)), want: "remove n3 (gone)"},
		{name: "left gracefully counts as gone",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), gone("n3", MemberLeft, long)), want: "remove n3 (gone)"},
		{name: "gone for less than the timeout: kept",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), gone("n3", MemberDead, short)), want: ""},
		{name: "suspect for long: kept (not gone)",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), gone("n3", MemberSuspect, long)), want: ""},
		{name: "a server gossip never saw is not removed",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2")), want: ""},
		{name: "3 nodes, two gone: no removal (1 alive of the 2 left is no quorum)",
			servers: votersCfg(3), members: members(alive("n1"), gone("n2", MemberDead, long), gone("n3", MemberDead, long)), want: ""},
		{name: "5 nodes, two gone: one removed per round (3 alive of the 4 left)",
			servers: votersCfg(5),
			members: members(alive("n1"), alive("n2"), alive("n3"), gone("n4", MemberDead, long), gone("n5", MemberDead, long)),
			want:    "remove n4 (gone)"},
		{name: "the same cluster next round, 4 nodes, one gone: removed (3 of 3)",
			servers: votersCfg(4), members: members(alive("n1"), alive("n2"), alive("n3"), gone("n5", MemberDead, long), gone("n4", MemberDead, long)),
			want: "remove n4 (gone)"},
		{name: "5 nodes, three gone: no removal (2 alive of the 4 left)",
			servers: votersCfg(5),
			members: members(alive("n1"), alive("n2"), gone("n3", MemberDead, long), gone("n4", MemberDead, long), gone("n5", MemberDead, long)),
			want:    ""},
		{name: "5 nodes, two gone, one suspect: no removal (suspect is not alive: 2 of 4)",
			servers: votersCfg(5),
			members: members(alive("n1"), alive("n2"), gone("n3", MemberSuspect, time.Second), gone("n4", MemberDead, long), gone("n5", MemberDead, long)),
			want:    ""},
		{name: "2 nodes, the other gone: removed (the leader alone is a quorum of 1)",
			servers: votersCfg(2), members: members(alive("n1"), gone("n2", MemberDead, long)), want: "remove n2 (gone)"},
		{name: "the leader counts as alive even when gossip says otherwise, and is never removed",
			servers: votersCfg(3), members: members(gone("n1", MemberDead, long), alive("n2"), gone("n3", MemberDead, long)), want: "remove n3 (gone)"},
		{name: "a dead non-voter is removed whatever the quorum",
			servers: append(votersCfg(3), cfgServer{ID: "n4", Addr: "r4"}),
			members: members(alive("n1"), gone("n2", MemberDead, long), gone("n3", MemberDead, long), gone("n4", MemberDead, long)),
			want:    "remove n4 (gone)"},
		{name: "non-voters do not count towards the quorum",
			servers: append(votersCfg(3), cfgServer{ID: "n4", Addr: "r4"}, cfgServer{ID: "n5", Addr: "r5"}),
			members: members(alive("n1"), gone("n2", MemberDead, long), gone("n3", MemberDead, long), alive("n4"), alive("n5")),
			want:    ""},

		// revoked certificates
		{name: "a revoked voter is removed while a quorum remains",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), alive("n3")), revoked: []string{"n2"}, want: "remove n2 (revoked)"},
		{name: "a revoked voter is removed before a dead one, one per round",
			servers: votersCfg(5),
			members: members(alive("n1"), alive("n2"), alive("n3"), alive("n4"), gone("n5", MemberDead, long)),
			revoked: []string{"n3"}, want: "remove n3 (revoked)"},
		{name: "a revoked voter is kept when its removal would lose the quorum",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), gone("n3", MemberDead, short)), revoked: []string{"n2"}, want: ""},
		{name: "the leader's own revoked certificate does not remove it",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), alive("n3")), revoked: []string{"n1"}, want: ""},
		{name: "adds and a removal in one round",
			servers: votersCfg(3), members: members(alive("n1"), alive("n2"), gone("n3", MemberDead, long), alive("n4")),
			want: "add n4@r4, remove n3 (gone)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := membershipView{Self: "n1", Servers: tc.servers, Members: tc.members, Removed: tc.removed,
				Revoked: map[string]bool{}, DeadNodeTimeout: timeout}
			for _, id := range tc.revoked {
				v.Revoked[id] = true
			}
			got := decideMembership(v)
			if s := actions(got); s != tc.want {
				t.Fatalf("got %q, want %q", s, tc.want)
			}
			// pure: the same view gives the same answer
			if again := decideMembership(v); !reflect.DeepEqual(again, got) {
				t.Fatalf("not deterministic: %v then %v", got, again)
			}
		})
	}
}
