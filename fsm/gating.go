package fsm

// Rolling upgrades: a leader must not append a command type that some voter
// cannot apply (an unknown non-ignorable type stops that node). Every node
// advertises the command types it applies beyond the baseline; a type outside
// the baseline is written only when every voter advertises it.

// Baseline reports whether t is applied by every halapi release that can be
// in a cluster (the set of d51193e): such a type is always allowed.
func Baseline(t CmdType) bool {
	return (t >= CmdSetJWTKey && t <= CmdAllowlistReplace) || t == CmdTouch
}

// Supported reports whether this build applies command type t.
func Supported(t CmdType) bool {
	_, err := bodyFor(t)
	return err == nil
}

// Extensions lists the command types this build applies beyond the
// baseline (advertised to the other members). A new command type needs no
// registration: having a body in bodyFor makes it supported.
func Extensions() []uint8 {
	var out []uint8
	for t := 1; t < 256; t++ {
		if !Baseline(CmdType(t)) && Supported(CmdType(t)) {
			out = append(out, uint8(t))
		}
	}
	return out
}
