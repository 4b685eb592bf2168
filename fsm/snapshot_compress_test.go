package fsm

import (
	"bytes"
	"fmt"
	"testing"
)

// compressState fills an FSM with a bit of everything a snapshot holds.
func compressState(t *testing.T) *harness {
	h := newHarness(t)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m1", AuthType: AuthPassword}})
	var vals []string
	for i := range 3000 {
		vals = append(vals, fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff))
	}
	// one entry: the harness images the whole state at every entry
	h.must(CmdImportList, T0, ImportList{Alert: pullAlert("lists:b"), Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "b",
		Until: T0 + hour, Seed: MustUUID("00000000-0000-4000-8000-100000000000"), Values: vals})
	h.dec(T0, ban("10.0.0.1", T0+hour))
	ids := h.dec(T0, withScope(ban("FR", T0+hour), "Country"))
	h.expire(T0+sec, ids)
	h.must(CmdImportList, T0+2*sec, ImportList{Alert: pullAlert("lists:a"), Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "a",
		Until: T0 + hour, Seed: MustUUID("6f1c2a3b-4d5e-4f60-8172-000000000000"), Values: []string{"1.1.1.1", "2001:db8::/64"}})
	return h
}

// Compressed snapshots (s2) restore to the same state as plain ones, are
// several times smaller, and one FSM reads both forms whatever its own
// setting (a node restores snapshots written before and after an upgrade).
func TestCompressedSnapshotRestoresLikePlain(t *testing.T) {
	h := compressState(t)
	snapshot := func(compress bool) []byte {
		h.f.SetCompressedSnapshots(compress)
		snap, err := h.f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		return persist(t, snap)
	}
	plain, packed := snapshot(false), snapshot(true)
	if plain[0] != '{' {
		t.Fatalf("plain snapshot starts with %q", plain[:1])
	}
	if !bytes.HasPrefix(packed, []byte(snapS2Magic)) {
		t.Fatalf("compressed snapshot starts with %q", packed[:min(10, len(packed))])
	}
	if len(packed)*3 > len(plain) {
		t.Errorf("compressed snapshot %d bytes, plain %d: less than 3x smaller", len(packed), len(plain))
	}
	probes := []string{"10.0.0.1", "1.1.1.1", "2001:db8::1"}
	streams := []streamQuery{{name: "startup", startup: true}}
	want := takeDump(t, h.f, T0, probes, streams)
	for _, on := range []bool{false, true} {
		for name, data := range map[string][]byte{"plain": plain, "compressed": packed} {
			f := New(quietLogger())
			f.SetCompressedSnapshots(on)
			rc := &closeTracker{Reader: bytes.NewReader(data)}
			if err := f.Restore(rc); err != nil {
				t.Fatalf("restore %s (own setting %v): %v", name, on, err)
			}
			compareDumps(t, fmt.Sprintf("%s snapshot, restoring FSM compresses: %v", name, on), takeDump(t, f, T0, probes, streams), want)
			checkIndexInvariants(t, f)
		}
	}
	// a damaged compressed stream is an error, not a partial state
	if err := New(quietLogger()).Restore(&closeTracker{Reader: bytes.NewReader(packed[:len(packed)/2])}); err == nil {
		t.Error("a truncated compressed snapshot restored without error")
	}
}
