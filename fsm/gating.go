package fsm

// Rolling upgrades: a leader must not append a command type that some voter
// cannot apply (an unknown non-ignorable type stops that node). Every node
// advertises the command types it applies beyond the baseline; a type outside
// the baseline is written only when every voter advertises it. Both sets come
// from the command registry (commands.go): baseline(...) and gated(...) lines.

// Baseline reports whether t is applied by every halapi release that can be
// in a cluster (the set of d51193e): such a type is always allowed.
func Baseline(t CmdType) bool {
	c := commands.lookup(t)
	return c != nil && !c.gated
}

// Supported reports whether this build applies command type t.
func Supported(t CmdType) bool { return commands.lookup(t) != nil }

// Extensions lists the command types this build applies beyond the
// baseline (advertised to the other members): the gated registrations.
func Extensions() []uint8 {
	return commands.types(func(c *command) bool { return c.gated })
}
