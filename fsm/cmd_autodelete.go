package fsm

// The AutoDelete command: machines and bouncers not seen for too long.

import "sort"

// AutoDelete deletes the machines and bouncers not seen for longer than
// the given ages (nanoseconds, 0 = off), per auth type: CrowdSec's
// db_config.flush agents_autodelete (cert, login_password) and
// bouncers_autodelete (cert, api_key). The cutoff is the entry's time
// minus the age, evaluated at apply time on the replicated state. As in
// CrowdSec, a machine or bouncer never seen (no heartbeat, no pull) is
// kept, and so is a machine that owns alerts.
type AutoDelete struct {
	AgentsCert     int64 `json:"agents_cert,omitempty"`
	AgentsPassword int64 `json:"agents_password,omitempty"`
	BouncersCert   int64 `json:"bouncers_cert,omitempty"`
	BouncersAPIKey int64 `json:"bouncers_api_key,omitempty"`
}

func (b AutoDelete) Validate() error {
	var k checker
	k.nonNeg("agents_cert", b.AgentsCert)
	k.nonNeg("agents_password", b.AgentsPassword)
	k.nonNeg("bouncers_cert", b.BouncersCert)
	k.nonNeg("bouncers_api_key", b.BouncersAPIKey)
	return k.err
}

// autoDeleteVictims lists what an AutoDelete with these ages,
// applied at now, deletes (the leader checks before it
// writes an entry).
func (s *state) autoDeleteVictims(b *AutoDelete, now int64) (machines, bouncers []string) {
	stale := func(seen, age int64) bool { return age > 0 && seen != 0 && seen <= now-age }
	for id, m := range s.machines {
		switch {
		case m.AuthType == AuthTLS && stale(m.LastHeartbeat, b.AgentsCert),
			m.AuthType == AuthPassword && stale(m.LastHeartbeat, b.AgentsPassword):
			machines = append(machines, id)
		}
	}
	if len(machines) > 0 {
		// CrowdSec keeps a machine that owns alerts
		owners := map[string]bool{}
		s.alerts.Ascend(func(a *Alert) bool {
			owners[a.MachineID] = true
			return true
		})
		kept := machines[:0]
		for _, id := range machines {
			if !owners[id] {
				kept = append(kept, id)
			}
		}
		machines = kept
	}
	for name, bc := range s.bouncers {
		switch {
		case bc.AuthType == AuthTLS && stale(bc.LastPull, b.BouncersCert),
			bc.AuthType == AuthAPIKey && stale(bc.LastPull, b.BouncersAPIKey):
			bouncers = append(bouncers, name)
		}
	}
	sort.Strings(machines)
	sort.Strings(bouncers)
	return machines, bouncers
}

func (s *state) autoDelete(e entryCtx, b *AutoDelete) *Result {
	machines, bouncers := s.autoDeleteVictims(b, e.now)
	for _, id := range machines {
		delete(s.wMachines(), id)
	}
	for _, name := range bouncers {
		s.deleteBouncer(name)
	}
	return &Result{N: len(machines) + len(bouncers)}
}
