package fsm

// Read side: allowlists.

import (
	"sort"
	"time"
)

// Allowlists returns all allowlists sorted by name.
func (f *FSM) Allowlists() []*Allowlist {
	s := f.read()
	out := make([]*Allowlist, 0, len(s.allowlists))
	for _, a := range s.allowlists {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Allowlist returns one allowlist, or nil.
func (f *FSM) Allowlist(name string) *Allowlist {
	s := f.read()
	return s.allowlists[name]
}

// AllowlistCheck returns the reasons value (IP or CIDR) is allowlisted:
// "<item> from <list>" plus " (<comment>)", sorted by list name.
func (f *FSM) AllowlistCheck(value string, now time.Time) ([]string, error) {
	r, err := ParseRange(value)
	if err != nil {
		return nil, err
	}
	n := now.UnixNano()
	var out []string
	for _, al := range f.Allowlists() {
		for _, it := range al.Items {
			if it.Expiration != 0 && it.Expiration < n {
				continue
			}
			if it.Range.Related(r) {
				reason := it.Value + " from " + al.Name
				if it.Comment != "" {
					reason += " (" + it.Comment + ")"
				}
				out = append(out, reason)
			}
		}
	}
	return out, nil
}
