package fsm

import (
	"encoding/json"
	"strings"
)

// Queries of the notification cursors (cmd_notify.go), on the published
// state.

// NotifyState returns the replicated state of a notification name (ok is
// false when it has no cursor yet).
func (f *FSM) NotifyState(name string) (NotifyState, bool) {
	var st NotifyState
	b := f.Config(NotifyKeyPrefix + name)
	if b == nil {
		return st, false
	}
	return st, json.Unmarshal(b, &st) == nil
}

// NotifyStates returns every notification name's replicated state.
func (f *FSM) NotifyStates() map[string]NotifyState {
	out := map[string]NotifyState{}
	for k, v := range f.ConfigPrefix(NotifyKeyPrefix) {
		var st NotifyState
		if json.Unmarshal(v, &st) == nil {
			out[strings.TrimPrefix(k, NotifyKeyPrefix)] = st
		}
	}
	return out
}
