package fsm

// Read side: machines and bouncers.

import (
	"sort"
	"time"
)

// Machine returns a machine by ID, or nil.
func (f *FSM) Machine(id string) *Machine {
	s := f.read()
	return s.machines[id]
}

// Machines returns all machines sorted by ID.
func (f *FSM) Machines() []*Machine {
	s := f.read()
	out := make([]*Machine, 0, len(s.machines))
	for _, m := range s.machines {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Bouncer returns a bouncer by name, or nil.
func (f *FSM) Bouncer(name string) *Bouncer {
	s := f.read()
	return s.bouncers[name]
}

// Bouncers returns all bouncers sorted by creation time then name.
func (f *FSM) Bouncers() []*Bouncer {
	s := f.read()
	out := make([]*Bouncer, 0, len(s.bouncers))
	for _, b := range s.bouncers {
		out = append(out, b)
	}
	sortBouncers(out)
	return out
}

// BouncersByKey returns the bouncers whose key hash is h, oldest first.
func (f *FSM) BouncersByKey(h string) []*Bouncer {
	s := f.read()
	var out []*Bouncer
	for _, name := range s.byKey[h] {
		if b := s.bouncers[name]; b != nil {
			out = append(out, b)
		}
	}
	sortBouncers(out)
	return out
}

// AutoDeleteDue returns the machines and bouncers an AutoDelete with b's
// ages would delete if applied at now (the leader writes the command only
// when something is due; Apply decides again on the replicated state).
func (f *FSM) AutoDeleteDue(b AutoDelete, now time.Time) (machines, bouncers []string) {
	return f.read().autoDeleteVictims(&b, now.UnixNano())
}

// UsageOlderThan reports whether any machine or bouncer keeps a usage
// record received before the given time (unix ns): the leader writes a
// UsageFlush only then (flush.metrics_max_age), not every run.
func (f *FSM) UsageOlderThan(before int64) bool {
	s := f.read()
	for _, m := range s.machines {
		for _, r := range m.Usage {
			if r.ReceivedAt < before {
				return true
			}
		}
	}
	for _, b := range s.bouncers {
		for _, r := range b.Usage {
			if r.ReceivedAt < before {
				return true
			}
		}
	}
	return false
}

// sortBouncers orders bouncers by creation time, then name (oldest first).
func sortBouncers(bs []*Bouncer) {
	if len(bs) < 2 {
		return
	}
	sort.Slice(bs, func(i, j int) bool {
		if bs[i].CreatedAt != bs[j].CreatedAt {
			return bs[i].CreatedAt < bs[j].CreatedAt
		}
		return bs[i].Name < bs[j].Name
	})
}
