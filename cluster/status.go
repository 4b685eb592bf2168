package cluster

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Member is one node as cluster status shows it.
type Member struct {
	ID           string `json:"id"`
	Role         string `json:"role"`  // a MemberRole: leader, follower, nonvoter, joining
	State        string `json:"state"` // a MemberState: alive, suspect, dead, left, unknown
	RaftAddr     string `json:"raft_addr,omitempty"`
	GossipAddr   string `json:"gossip_addr,omitempty"` // as gossip knows the member
	APIURL       string `json:"api_url,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	CommitIndex  uint64 `json:"commit_index,omitempty"`
	Error        string `json:"error,omitempty"`
	// Profiles: what the member evaluates (profilesinfo.go).
	Profiles *ProfilesInfo `json:"profiles,omitempty"`
}

// Status is a point-in-time view of the node and, through it, the cluster.
type Status struct {
	NodeID       string   `json:"node_id"`
	State        string   `json:"state"`
	Leader       string   `json:"leader"`
	Term         uint64   `json:"term"`
	CommitIndex  uint64   `json:"commit_index"`
	AppliedIndex uint64   `json:"applied_index"`
	LastLogIndex uint64   `json:"last_log_index"`
	Healthy      bool     `json:"healthy"`
	Members      []Member `json:"members,omitempty"`
	// Warnings name risky settings of members (plainhttp.go).
	Warnings []string `json:"warnings,omitempty"`
	// Profiles: what this node evaluates (profilesinfo.go).
	Profiles *ProfilesInfo `json:"profiles,omitempty"`
}

func statU(st map[string]string, k string) uint64 {
	v, _ := strconv.ParseUint(st[k], 10, 64)
	return v
}

func (n *Node) localStatus() Status {
	st := n.raft.Stats()
	_, leader := n.raft.LeaderWithID()
	applied := n.appliedIndex(statU(st, "applied_index"))
	return Status{NodeID: n.cfg.NodeID, State: n.raft.State().String(), Leader: string(leader),
		Term: statU(st, "term"), CommitIndex: statU(st, "commit_index"), AppliedIndex: applied,
		LastLogIndex: statU(st, "last_log_index"), Healthy: leader != "", Profiles: n.profilesInfo()}
}

// maxAppliedGap bounds the log entries appliedIndex reads.
const maxAppliedGap = 256

// appliedIndex is the index this node's state has reached. The FSM's
// index counts the entries it applied; raft's also counts the entries the
// FSM never sees (a new leader's no-op, barriers), so after an election
// with no write since the FSM's alone would stay below the commit index
// for ever. But raft counts an entry once it has handed it to the FSM's
// goroutine, before the FSM applied it: raft's index is taken only when
// every entry between the two is one the FSM never sees (WaitReplicated
// returned before a member had applied the write it waited for).
func (n *Node) appliedIndex(raftApplied uint64) uint64 {
	fsmApplied := n.FSM.AppliedIndex()
	if raftApplied <= fsmApplied {
		return fsmApplied
	}
	if raftApplied-fsmApplied > maxAppliedGap {
		return fsmApplied
	}
	var l raft.Log
	for i := fsmApplied + 1; i <= raftApplied; i++ {
		// an entry no longer in the log is in a snapshot this node holds
		if err := n.logs.GetLog(i, &l); err == nil && (l.Type == raft.LogCommand || l.Type == raft.LogConfiguration) {
			return fsmApplied
		}
	}
	return raftApplied
}

// Status returns this node's view plus every member, asking each for its
// indexes over the cluster port (bounded by ctx).
func (n *Node) Status(ctx context.Context) Status {
	st := n.localStatus()
	f := n.raft.GetConfiguration()
	servers := map[string]raft.Server{}
	if f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			servers[string(s.ID)] = s
		}
	}
	gm := map[string]member{}
	if n.gossip != nil {
		for _, m := range n.gossip.snapshot() {
			gm[m.ID] = m
		}
	}
	ids := map[string]bool{}
	for id := range servers {
		ids[id] = true
	}
	for id, m := range gm {
		if m.State.Reachable() {
			ids[id] = true
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for id := range ids {
		m := Member{ID: id, State: string(MemberUnknown), Role: string(RoleJoining)}
		if s, ok := servers[id]; ok {
			m.RaftAddr = string(s.Address)
			m.Role = string(RoleFollower)
			if s.Suffrage != raft.Voter {
				m.Role = string(RoleNonvoter)
			}
			if id == st.Leader {
				m.Role = string(RoleLeader)
			}
		}
		if g, ok := gm[id]; ok {
			m.State = string(g.State)
			m.APIURL = g.Meta.APIURL
			m.GossipAddr = g.Addr
			if m.RaftAddr == "" {
				m.RaftAddr = g.Meta.RaftAddr
			}
		}
		if id == n.cfg.NodeID {
			m.State, m.APIURL = string(MemberAlive), n.cfg.APIURL
			m.AppliedIndex, m.CommitIndex = st.AppliedIndex, st.CommitIndex
			m.Profiles = st.Profiles
			mu.Lock()
			st.Members = append(st.Members, m)
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func(m Member) {
			defer wg.Done()
			if m.RaftAddr != "" && n.mux != nil && !MemberState(m.State).Gone() {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				resp, err := n.rpc.call(cctx, m.RaftAddr, rpcStatus, nil)
				cancel()
				if err != nil {
					m.Error = err.Error()
				} else if resp.Status != nil {
					m.AppliedIndex, m.CommitIndex = resp.Status.AppliedIndex, resp.Status.CommitIndex
					m.Profiles = resp.Status.Profiles
				}
			}
			mu.Lock()
			st.Members = append(st.Members, m)
			mu.Unlock()
		}(m)
	}
	wg.Wait()
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].ID < st.Members[j].ID })
	st.Warnings = memberWarnings(st.Members)
	st.Warnings = append(st.Warnings, profilesWarnings(st.Members, st.Leader)...)
	return st
}

// Voters returns the IDs of the voters in the latest raft configuration.
func (n *Node) Voters() []string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.ID))
		}
	}
	return out
}

// memberWarnings: one line per member serving plain HTTP off loopback,
// and per member advertising a wildcard API URL.
func memberWarnings(members []Member) []string {
	var out []string
	for _, m := range members {
		if PlainRemoteURL(m.APIURL) {
			out = append(out, fmt.Sprintf("%s serves the LAPI over plain HTTP on a non-loopback address (%s): credentials and API keys cross the network in clear", m.ID, m.APIURL))
		}
		if WildcardURL(m.APIURL) {
			out = append(out, fmt.Sprintf("%s advertises the API URL %s, a wildcard address clients on other hosts cannot use (halapi agent skips it): set its --api-advertise", m.ID, m.APIURL))
		}
	}
	return out
}
