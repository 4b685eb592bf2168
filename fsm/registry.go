package fsm

import (
	"encoding/json"
	"fmt"
)

// The command registry: every command type once, with its body type (what
// the entry's JSON decodes into; its Validate method bounds it) and the
// function that applies it. Decode, Command.Validate, Apply, the
// skip-or-stop rule for undecodable entries (EntryKind) and the
// rolling-upgrade gating (gating.go) all read this one table; no other
// code lists command types. The table itself is in commands.go, one line
// a command; it is checked when the package is initialised: a type
// registered twice, type 0, or a command without an apply function stops
// the program at start (TestRegistryRefusesBadTables).

// entryCtx is what an apply function knows of its entry besides the body:
// its raft index and the leader's time (unix ns), the only clock Apply reads.
type entryCtx struct {
	index uint64
	now   int64
}

// command is one registered command type.
type command struct {
	typ CmdType
	// gated: outside the baseline (the types every halapi release that
	// can be in a cluster applies), so a leader writes it only when every
	// voter advertises it (gating.go).
	gated bool
	// fast, when set, decodes the common form of a big body without
	// reflection; false means "use decode".
	fast func(body []byte) (any, bool)
	// decode unmarshals a JSON body into a new *B.
	decode func(body []byte) (any, error)
	// takes reports whether a body (B or *B) is of this command's type.
	takes func(body any) bool
	// apply applies a decoded *B to the writer's state.
	apply func(s *state, e entryCtx, body any) *Result
}

// baseline registers a command type of the baseline: applied by every
// release that can be in a cluster (the set of d51193e). Never add one:
// a new command type is gated.
func baseline[B Validator](t CmdType, apply func(*state, entryCtx, *B) *Result) command {
	c := gated(t, apply)
	c.gated = false
	return c
}

// gated registers a command type outside the baseline: B is its body
// (B and *B implement Validator), apply changes the writer's state through
// the copy-on-write accessors and returns the result.
func gated[B Validator](t CmdType, apply func(*state, entryCtx, *B) *Result) command {
	c := command{
		typ:   t,
		gated: true,
		decode: func(data []byte) (any, error) {
			b := new(B)
			if err := json.Unmarshal(data, b); err != nil {
				return nil, err
			}
			return b, nil
		},
		takes: func(body any) bool {
			switch body.(type) {
			case B, *B:
				return true
			}
			return false
		},
	}
	if apply != nil {
		c.apply = func(s *state, e entryCtx, body any) *Result {
			b, ok := body.(*B)
			if !ok || b == nil {
				return fail(CodeInternal, "unhandled command %T", body)
			}
			return apply(s, e, b)
		}
	}
	return c
}

// withFast adds a hand-written decoder for the common form of the body.
func (c command) withFast(fast func(body []byte) (any, bool)) command {
	c.fast = fast
	return c
}

// registry maps a type byte to its command (nil: unknown to this build).
type registry [256]*command

// newRegistry builds a registry, refusing type 0 (never written: a zero
// type byte is what a zeroed entry holds), a type registered twice and a
// command without an apply function.
func newRegistry(cmds ...command) (*registry, error) {
	r := new(registry)
	for i := range cmds {
		c := &cmds[i]
		switch {
		case c.typ == 0:
			return nil, fmt.Errorf("fsm: command type 0 registered")
		case r[c.typ] != nil:
			return nil, fmt.Errorf("fsm: command type %d registered twice", c.typ)
		case c.apply == nil:
			return nil, fmt.Errorf("fsm: command type %d has no apply function", c.typ)
		}
		r[c.typ] = c
	}
	return r, nil
}

func mustRegistry(cmds ...command) *registry {
	r, err := newRegistry(cmds...)
	if err != nil {
		panic(err)
	}
	return r
}

// lookup returns the command of type t, or nil.
func (r *registry) lookup(t CmdType) *command { return r[t] }

// types lists the registered types for which keep is true, in order.
func (r *registry) types(keep func(*command) bool) []uint8 {
	var out []uint8
	for _, c := range r {
		if c != nil && keep(c) {
			out = append(out, uint8(c.typ))
		}
	}
	return out
}

// apply applies a decoded command to the writer's state.
func (s *state) apply(index uint64, c Command) *Result {
	cmd := commands.lookup(c.Type)
	if cmd == nil {
		return fail(CodeInternal, "unhandled command %T", c.Body)
	}
	return cmd.apply(s, entryCtx{index: index, now: c.Time}, c.Body)
}
