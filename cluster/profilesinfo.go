package cluster

import "fmt"

// ProfilesInfo is what a node reports about the profiles it evaluates
// (lapi's ActiveProfiles, given through SetProfilesInfo): cluster status
// shows it per member and flags members that disagree.
type ProfilesInfo struct {
	Hash   string `json:"hash"`
	Source string `json:"source"` // replicated, file or default
	// LocalDiffers: the replicated set is in use and the node's own file
	// or notification dir differs from it (ignored).
	LocalDiffers bool `json:"local_differs,omitempty"`
	// Error: the newest replicated set does not load on this node.
	Error string `json:"error,omitempty"`
	// Mismatch is set by Status: the member's hash differs from the
	// leader's (or, without a leader, from most members').
	Mismatch bool `json:"mismatch,omitempty"`
}

// SetProfilesInfo sets the function that reports this node's profiles in
// its status (called on each status request; must be cheap).
func (n *Node) SetProfilesInfo(fn func() ProfilesInfo) { n.profInfo.Store(&fn) }

func (n *Node) profilesInfo() *ProfilesInfo {
	fn := n.profInfo.Load()
	if fn == nil {
		return nil
	}
	p := (*fn)()
	return &p
}

// profilesWarnings marks the members whose profiles differ from the
// reference set (the leader's; without a leader, the hash most members
// report) and returns one line per problem. Members that did not report
// (older versions, unreachable) are not compared.
func profilesWarnings(members []Member, leader string) []string {
	count := map[string]int{}
	ref := ""
	for _, m := range members {
		if m.Profiles == nil {
			continue
		}
		count[m.Profiles.Hash]++
		if m.ID == leader {
			ref = m.Profiles.Hash
		}
	}
	refBy := "the leader " + leader
	if ref == "" {
		refBy = "most members"
		best := 0
		for h, c := range count {
			if c > best || (c == best && h < ref) {
				ref, best = h, c
			}
		}
	}
	var out []string
	for i := range members {
		p := members[i].Profiles
		if p == nil {
			continue
		}
		if p.Hash != ref {
			p.Mismatch = true
			out = append(out, fmt.Sprintf("%s evaluates other profiles (%s, %s) than %s (%s): apply one set with `halapi profiles apply`, or give every node the same --profiles file and --notification-dir", members[i].ID, p.Source, p.Hash, refBy, ref))
		}
		if p.LocalDiffers {
			out = append(out, fmt.Sprintf("%s: its --profiles file or --notification-dir differs from the replicated profiles (which are in use; the local copy is ignored)", members[i].ID))
		}
		if p.Error != "" {
			out = append(out, fmt.Sprintf("%s cannot load the replicated profiles and keeps its previous set: %s", members[i].ID, p.Error))
		}
	}
	return out
}
