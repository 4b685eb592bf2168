package lapi

import (
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/profiles"
	"github.com/halapi/halapi/notify"
)

// notifyList turns the profiles that matched an alert into the
// notifications stored with it (fsm.Alert.Notify): each name once, in
// match order, marked when the matching profile saw the alert before
// another profile gave it decisions (the reference sends that copy).
// Names beyond the FSM's bounds are dropped.
func notifyList(matches []profiles.Match) []fsm.AlertNotify {
	var out []fsm.AlertNotify
	seen := map[string]bool{}
	for _, m := range matches {
		for _, n := range m.Profile.Notifications {
			if seen[n] || n == "" || len(n) > fsm.MaxNotifyName || len(out) >= fsm.MaxAlertNotify {
				continue
			}
			seen[n] = true
			out = append(out, fsm.AlertNotify{Name: n, NoDecisions: len(m.Alert.Decisions) == 0})
		}
	}
	return out
}

// ProfileNotifications returns every notification name the profiles list,
// once each, in profile order.
func (s *Server) ProfileNotifications() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range s.Profiles().Engine.Profiles() {
		for _, n := range p.Notifications {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// manualNotify evaluates the profiles for a decision added by hand (`halapi
// decisions add`, cscli's `decisions add` in the reference, which posts an
// alert that already carries its decision): only notifications can come
// of it.
func (s *Server) manualNotify(a *fsm.Alert, d *fsm.Decision) []fsm.AlertNotify {
	m := notify.AlertModel(a, []*fsm.Decision{d}, false)
	ms, err := s.Profiles().Engine.Evaluate(m, s.now())
	if err != nil {
		return nil // never for an alert with decisions; keep the decision anyway
	}
	return notifyList(ms)
}
