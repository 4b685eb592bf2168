package fsm

// EntryFormat is the newest raft log entry format this build writes and
// reads (older formats are still read; a newer one stops the node). Shown
// by `halapi version`.
const EntryFormat = formatV2

// CommandTypes lists every command type this build applies, baseline and
// extensions (`halapi version`; the extensions are what a node advertises
// for feature gating, see Extensions).
func CommandTypes() []uint8 {
	return commands.types(func(*command) bool { return true })
}
