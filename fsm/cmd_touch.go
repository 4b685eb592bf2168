package fsm

// The Touch command: coalesced last-seen times and stream cursors of
// machines and bouncers.

// Touch carries coalesced last-seen times and stream cursors. Values only
// move forward.
type Touch struct {
	Machines []MachineTouch `json:"machines,omitempty"`
	Bouncers []BouncerTouch `json:"bouncers,omitempty"`
}

type MachineTouch struct {
	ID            string `json:"id"`
	LastHeartbeat int64  `json:"last_heartbeat,omitempty"`
}

type BouncerTouch struct {
	Name     string `json:"name"`
	LastPull int64  `json:"last_pull,omitempty"`
	Cursor   uint64 `json:"cursor,omitempty"`
	// Node served that pull (a node ID; optional). Written only once every
	// voter knows the field (lapi's toucher checks CmdAuditAppend, the
	// command of the same release).
	Node string `json:"node,omitempty"`
}

func (b Touch) Validate() error {
	var k checker
	k.count("machines", len(b.Machines), MaxItemsPerEntry)
	k.count("bouncers", len(b.Bouncers), MaxItemsPerEntry)
	for i := range b.Machines {
		if k.err != nil {
			break
		}
		k.at("machines", i)
		k.name("id", b.Machines[i].ID, true)
		k.nonNeg("last_heartbeat", b.Machines[i].LastHeartbeat)
		k.out()
	}
	for i := range b.Bouncers {
		if k.err != nil {
			break
		}
		k.at("bouncers", i)
		k.name("name", b.Bouncers[i].Name, true)
		k.nonNeg("last_pull", b.Bouncers[i].LastPull)
		k.name("node", b.Bouncers[i].Node, false)
		k.out()
	}
	return k.err
}

func (s *state) touch(_ entryCtx, b *Touch) *Result {
	n := 0
	for _, t := range b.Machines {
		old, ok := s.machines[t.ID]
		if !ok || t.LastHeartbeat <= old.LastHeartbeat {
			continue
		}
		m := *old
		m.LastHeartbeat = t.LastHeartbeat
		s.wMachines()[m.ID] = &m
		n++
	}
	for _, t := range b.Bouncers {
		old, ok := s.bouncers[t.Name]
		if !ok || (t.LastPull <= old.LastPull && t.Cursor <= old.Cursor) {
			continue
		}
		nb := *old
		if t.LastPull > nb.LastPull {
			nb.LastPullNode = t.Node
		}
		nb.LastPull = max(nb.LastPull, t.LastPull)
		nb.Cursor = max(nb.Cursor, t.Cursor)
		s.wBouncers()[nb.Name] = &nb
		n++
	}
	return &Result{N: n}
}
