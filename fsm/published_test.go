package fsm

import (
	"bytes"
	"sort"
	"testing"
)

// stateImage serialises a published state the way a snapshot does, with
// the maps in a fixed order. Readers hold published states without a lock
// (invariant 11), so an apply must never change one: every command the
// harness applies is checked against the image taken before it
// (harness.raw), which covers every command type the fsm tests use.
func stateImage(t testing.TB, s *state) []byte {
	t.Helper()
	snap := &fsmSnapshot{
		meta: snapMeta{Version: 1, JWTKey: s.jwtKey, Config: s.config, NextAlertID: s.nextAlertID,
			NextDecisionID: s.nextDecisionID, LastIndex: s.lastIndex},
		alerts: s.alerts, decisions: s.decisions, tombstones: s.tombstones, profiles: s.profiles, audit: s.audit,
	}
	for _, m := range s.machines {
		snap.machines = append(snap.machines, m)
	}
	sort.Slice(snap.machines, func(i, j int) bool { return snap.machines[i].ID < snap.machines[j].ID })
	for _, b := range s.bouncers {
		snap.bouncers = append(snap.bouncers, b)
	}
	sort.Slice(snap.bouncers, func(i, j int) bool { return snap.bouncers[i].Name < snap.bouncers[j].Name })
	for _, a := range s.allowlists {
		snap.allowlists = append(snap.allowlists, a)
	}
	sort.Slice(snap.allowlists, func(i, j int) bool { return snap.allowlists[i].Name < snap.allowlists[j].Name })
	var buf bytes.Buffer
	if err := snap.write(&buf); err != nil {
		t.Fatalf("state image: %v", err)
	}
	keys := make([]string, 0, len(s.byKey))
	for k := range s.byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		buf.WriteString(k)
		for _, n := range s.byKey[k] {
			buf.WriteString(" " + n)
		}
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// A direct write to a map or a record shared with the published state is
// caught: the image of the state published before the apply changes.
func TestApplyLeavesPublishedStateUnchanged(t *testing.T) {
	h := newHarness(t)
	h.must(CmdMachineCreate, 1, MachineCreate{Machine: Machine{ID: "m1", PasswordHash: []byte("x"), AuthType: AuthPassword}})
	before := h.f.read()
	img := stateImage(t, before)
	// what a buggy apply would do: write the shared map in place
	h.f.mu.Lock()
	h.f.s.machines["m1"] = &Machine{ID: "m1", PasswordHash: []byte("changed")}
	h.f.mu.Unlock()
	if bytes.Equal(img, stateImage(t, before)) {
		t.Fatal("an in-place write to the shared machines map went unnoticed by the image")
	}
}
