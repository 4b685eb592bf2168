package fsm

import (
	"maps"

	"github.com/google/btree"
)

// state is the in-memory replicated state and its indexes.
//
// Two kinds of state values exist. The writer's state (FSM.s) is changed
// only by the apply goroutine (and Restore), under FSM.mu. After each
// entry (or batch of entries) the writer publishes a frozen copy
// (publish): a shallow copy whose B-trees are O(1) copy-on-write clones.
// Readers load the published copy through an atomic pointer and never
// wait for an apply; a published state is never modified again. The maps
// (machines, bouncers, ...) are small and not copy-on-write in Go: the
// writer copies a map the first time it changes it after a publish
// (the shared bits and the w* accessors). done, doneOrder and strs are
// the writer's bookkeeping only and are nil in a published state.
type state struct {
	machines   map[string]*Machine
	bouncers   map[string]*Bouncer
	byKey      map[string][]string // API key hash -> bouncer names
	allowlists map[string]*Allowlist

	alerts    *btree.BTreeG[*Alert]    // by ID
	decisions *btree.BTreeG[*Decision] // by ID
	// valueIdx orders the decisions that are not in ipIdx (non-IP
	// scopes, or IP scopes whose value does not parse) by (value, ID).
	// Together with an exact-range lookup in ipIdx it finds every
	// decision with a given value (sameValue): dedup ("longest decision
	// wins") looks at the decisions of a value with the same type and
	// scope. A Go map would not be copy-on-write, and an entry per IP
	// decision cost ~65 bytes each.
	valueIdx *btree.BTreeG[*Decision]
	// ipIdx orders IP-scoped decisions by (family, start, bits, id);
	// prefixes counts the decisions per (family, prefix length) so that a
	// "covering" lookup probes only lengths that exist.
	ipIdx    *btree.BTreeG[*Decision]
	prefixes [2][129]int32
	byUntil  *btree.BTreeG[*Decision] // by (Until, ID)
	// deleted holds decisions expired by hand (DeletedIndex > 0) ordered by
	// (DeletedIndex, ID), and tombstones of hard-deleted active decisions,
	// so that streams report them as deleted.
	deleted    *btree.BTreeG[*Decision]
	tombstones *btree.BTreeG[*Decision]

	jwtKey []byte
	config map[string][]byte
	// profiles is the replicated profiles set (profiles.go), immutable.
	profiles *ProfileSet
	// audit is the audit trail (cmd_audit.go), a ring shared with
	// published states that only adds past their ends.
	audit auditLog
	// done remembers the results of the last idempotent commands (by
	// request ID), so a retried write is applied once (dedupCap entries,
	// oldest dropped first).
	done      map[string]*Result
	doneOrder []string
	// strs interns the few distinct origins, types, scopes and scenarios
	// so a million decisions share their strings (memory target: 1M
	// decisions well under 1 GiB).
	strs           map[string]string
	nextAlertID    int64
	nextDecisionID int64
	lastIndex      uint64
	alertCount     int
	// restoredMaxID is the highest decision ID a restore has added so
	// far (readSnapshot).
	restoredMaxID int64
	// shared marks the maps that the last published state still uses:
	// the writer copies such a map before changing it.
	shared uint8
}

const (
	shMachines uint8 = 1 << iota
	shBouncers
	shByKey
	shAllowlists
	shConfig
	shAll = shMachines | shBouncers | shByKey | shAllowlists | shConfig
)

// publish returns a frozen copy of the writer's state for readers: the
// trees are cloned (O(1), copy-on-write both ways), the maps are shared
// until the writer next changes them.
func (s *state) publish() *state {
	p := *s
	p.alerts = s.alerts.Clone()
	p.decisions = s.decisions.Clone()
	p.valueIdx = s.valueIdx.Clone()
	p.ipIdx = s.ipIdx.Clone()
	p.byUntil = s.byUntil.Clone()
	p.deleted = s.deleted.Clone()
	p.tombstones = s.tombstones.Clone()
	p.done, p.doneOrder, p.strs = nil, nil, nil
	s.shared = shAll
	return &p
}

func ownMap[V any](s *state, bit uint8, m *map[string]V) map[string]V {
	if s.shared&bit != 0 {
		*m = maps.Clone(*m)
		s.shared &^= bit
	}
	return *m
}

// Writable maps of the writer's state (copied once after each publish).
func (s *state) wMachines() map[string]*Machine     { return ownMap(s, shMachines, &s.machines) }
func (s *state) wBouncers() map[string]*Bouncer     { return ownMap(s, shBouncers, &s.bouncers) }
func (s *state) wByKey() map[string][]string        { return ownMap(s, shByKey, &s.byKey) }
func (s *state) wAllowlists() map[string]*Allowlist { return ownMap(s, shAllowlists, &s.allowlists) }
func (s *state) wConfig() map[string][]byte         { return ownMap(s, shConfig, &s.config) }

func newState() *state {
	return &state{
		machines:       map[string]*Machine{},
		bouncers:       map[string]*Bouncer{},
		byKey:          map[string][]string{},
		allowlists:     map[string]*Allowlist{},
		config:         map[string][]byte{},
		strs:           map[string]string{},
		done:           map[string]*Result{},
		alerts:         btree.NewG(32, func(a, b *Alert) bool { return a.ID < b.ID }),
		decisions:      btree.NewG(32, byID),
		valueIdx:       btree.NewG(32, byValueOrder),
		ipIdx:          btree.NewG(32, byIP),
		byUntil:        btree.NewG(32, byUntilOrder),
		deleted:        btree.NewG(32, byDeletedIndex),
		tombstones:     btree.NewG(32, byDeletedIndex),
		nextAlertID:    1,
		nextDecisionID: 1,
	}
}
