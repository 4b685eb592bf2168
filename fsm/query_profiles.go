package fsm

// The replicated profiles set (cmd_profiles.go), from the published state.

// Profiles returns the replicated profiles set, or nil when none was ever
// applied. The set is immutable: callers must not modify it.
func (f *FSM) Profiles() *ProfileSet { return f.read().profiles }
