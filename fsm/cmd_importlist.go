package fsm

// ImportList: a pulled list in its compact form (issue 9, bulk). A
// blocklist or a CAPI group is many values sharing origin, type, scope,
// scenario and (for blocklists) expiry; ImportDecisions spells every
// decision out (~250 bytes each in the entry, log and network), this
// command carries each value once (~17 bytes): 15x fewer bytes to
// encode, write to BoltDB on every node, replicate and decode. Applying
// it is applying the ImportDecisions it stands for (decision i as
// ImportList.Decision(i) builds it): same replacements, same IDs, same
// result. It is gated (gating.go): a leader writes it only when every
// voter applies it, and falls back to ImportDecisions otherwise.

import (
	"encoding/binary"
	"runtime"
)

// CmdImportList is the compact import (numbered apart from the iota block:
// command types other branches append cannot collide with it).
const CmdImportList CmdType = 72

// ImportList stores Values as decisions of one alert, like ImportDecisions
// (AlertID 0: a new alert from Alert, its ID the result's first ID).
// Decision i has value Values[i], expiry Untils[i] (Until when Untils is
// empty), the shared origin, type, scope and scenario, and the UUID Seed
// with i added to its last 48 bits: unique within the list (the seed is
// random, Values are at most 2^20), the same on every node, and the
// version and variant bits of a version 4 seed are kept.
type ImportList struct {
	AlertID  int64    `json:"alert_id,omitempty"`
	Alert    Alert    `json:"alert"`
	Origin   string   `json:"origin"`
	Type     string   `json:"type"`
	Scope    string   `json:"scope"`
	Scenario string   `json:"scenario"`
	Until    int64    `json:"until,omitempty"`
	Untils   []int64  `json:"untils,omitempty"`
	Seed     UUID     `json:"seed"`
	Values   []string `json:"values"`
}

func (b ImportList) Validate() error {
	var k checker
	if b.AlertID < 0 {
		k.fail("alert_id", "is negative")
	}
	k.in("alert")
	k.alert(&b.Alert)
	k.out()
	k.name("origin", b.Origin, false)
	k.name("type", b.Type, false)
	k.name("scope", b.Scope, false)
	k.text("scenario", b.Scenario)
	k.count("values", len(b.Values), MaxDecisionsPerEntry)
	if len(b.Untils) != 0 && len(b.Untils) != len(b.Values) {
		k.fail("untils", "has %d items for %d values", len(b.Untils), len(b.Values))
	}
	for i := range b.Values {
		if k.err != nil {
			break
		}
		if i&listYieldEvery == listYieldEvery {
			runtime.Gosched() // see listYieldEvery
		}
		k.at("values", i)
		k.text("value", b.Values[i])
		k.ipValue("value", b.Scope, b.Values[i])
		k.out()
	}
	return k.err
}

// UUIDAt is the UUID of decision i of a list whose seed is seed.
func UUIDAt(seed UUID, i int) UUID {
	const mask = 1<<48 - 1
	lo := binary.BigEndian.Uint64(seed[8:16])
	lo = lo&^mask | (lo+uint64(i))&mask
	binary.BigEndian.PutUint64(seed[8:16], lo)
	return seed
}

// Decision is decision i of the list, as ImportDecisions would carry it.
func (b *ImportList) Decision(i int) Decision {
	until := b.Until
	if i < len(b.Untils) {
		until = b.Untils[i]
	}
	return Decision{UUID: UUIDAt(b.Seed, i), Origin: b.Origin, Type: b.Type, Scope: b.Scope, Value: b.Values[i],
		Scenario: b.Scenario, Until: until}
}

// Expand is the ImportDecisions the list stands for.
func (b *ImportList) Expand() ImportDecisions {
	out := ImportDecisions{AlertID: b.AlertID, Alert: b.Alert, Decisions: make([]Decision, len(b.Values))}
	for i := range b.Values {
		out.Decisions[i] = b.Decision(i)
	}
	return out
}

func (s *state) importList(e entryCtx, b *ImportList) *Result {
	return s.importEach(e, b.AlertID, &b.Alert, len(b.Values), b.Decision)
}
