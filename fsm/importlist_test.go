package fsm

import (
	"fmt"
	"strings"
	"testing"
)

// importListSteps is a sequence of list imports (new alerts, later chunks,
// re-imports over an older list, per-value expiries, values that do not
// parse) applied on top of a few decisions of other origins.
func importListSteps() []ImportList {
	seed := MustUUID("6f1c2a3b-4d5e-4f60-8172-ffffffffff00") // low 48 bits wrap within the list
	vals := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s.%d", prefix, i))
		}
		return out
	}
	return []ImportList{
		{Alert: pullAlert("lists:a"), Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "a", Until: T0 + hour, Seed: seed,
			Values: append(vals("10.0.0", 20), "2001:db8::1", "10.9.0.0/16")},
		{AlertID: 2, Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "a", Until: T0 + hour, Seed: UUIDAt(seed, 22),
			Values: vals("10.0.1", 5)},
		// community: per-value expiries, a non-IP scope
		{Alert: pullAlert("crowdsecurity/community-blocklist"), Origin: "CAPI", Type: "ban", Scope: "Country", Scenario: "s",
			Untils: []int64{T0 + 2*hour, T0 + 3*hour}, Seed: MustUUID("00000000-0000-4000-8000-000000000001"), Values: []string{"FR", "DE"}},
		// the same list again: replaces the first import's decisions (and
		// captcha on the same values: a different type, tombstoned)
		{Alert: pullAlert("lists:a"), Origin: "lists", Type: "captcha", Scope: "Ip", Scenario: "a", Until: T0 + 2*hour,
			Seed: MustUUID("00000000-0000-4000-8000-100000000000"), Values: vals("10.0.0", 10)},
	}
}

// An ImportList leaves exactly the state the ImportDecisions it stands for
// leaves: same IDs, UUIDs, replacements, tombstones, streams.
func TestImportListMatchesImportDecisions(t *testing.T) {
	list, full := newHarness(t), newHarness(t)
	for _, h := range []*harness{list, full} {
		h.dec(T0, ban("10.0.0.3", T0+hour))
		h.dec(T0, withOrigin(ban("10.0.0.4", T0+hour), "lists"))
	}
	probes := []string{"10.0.0.3", "10.0.0.4", "10.0.1.2", "2001:db8::1", "10.9.1.1"}
	streams := []streamQuery{{name: "startup", startup: true}, {name: "delta", cur: StreamCursor{Index: 2}}}
	for i, b := range importListSteps() {
		ts := T0 + int64(i+1)*sec
		rl := list.apply(CmdImportList, ts, b)
		rf := full.apply(CmdImportDecisions, ts, b.Expand())
		if fmt.Sprint(rl) != fmt.Sprint(rf) {
			t.Fatalf("step %d: list result %+v, decisions result %+v", i, rl, rf)
		}
		if rl.Err() != nil || rl.N == 0 {
			t.Fatalf("step %d: %+v", i, rl)
		}
		compareDumps(t, fmt.Sprintf("step %d", i), takeDump(t, list.f, ts, probes, streams), takeDump(t, full.f, ts, probes, streams))
		checkIndexInvariants(t, list.f)
	}
	// the UUIDs: distinct, the seed's version and variant kept
	seen := map[UUID]bool{}
	for _, d := range list.f.Decisions(&DecisionFilter{Origins: []string{"lists", "CAPI"}}, at(T0)) {
		if seen[d.UUID] {
			t.Errorf("UUID %s twice", d.UUID)
		}
		seen[d.UUID] = true
		if s := d.UUID.String(); d.Origin == "lists" && (s[14] != '4' || !strings.ContainsRune("89ab", rune(s[19]))) {
			t.Errorf("UUID %s lost the version 4 bits", s)
		}
	}
	if len(seen) < 20 {
		t.Errorf("only %d decisions checked", len(seen))
	}
	// and a snapshot of the list-built state restores to the same state
	compareDumps(t, "restored", takeDump(t, roundTrip(t, list.f), T0, probes, streams), takeDump(t, list.f, T0, probes, streams))
}

func TestUUIDAtWrapsInTheLow48Bits(t *testing.T) {
	seed := MustUUID("6f1c2a3b-4d5e-4f60-8172-ffffffffffff")
	if got := UUIDAt(seed, 0); got != seed {
		t.Errorf("UUIDAt(seed, 0) = %s", got)
	}
	if got := UUIDAt(seed, 1).String(); got != "6f1c2a3b-4d5e-4f60-8172-000000000000" {
		t.Errorf("UUIDAt(seed, 1) = %s", got)
	}
	if got := UUIDAt(seed, 3).String(); got != "6f1c2a3b-4d5e-4f60-8172-000000000002" {
		t.Errorf("UUIDAt(seed, 3) = %s", got)
	}
}

func TestImportListValidate(t *testing.T) {
	ok := ImportList{Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "a", Until: T0, Values: []string{"1.2.3.4"}}
	if err := (Command{Type: CmdImportList, Body: ok}).Validate(); err != nil {
		t.Fatalf("valid list refused: %v", err)
	}
	for name, b := range map[string]ImportList{
		"ip scope, not an IP": {Origin: "lists", Scope: "Ip", Values: []string{"1.2.3.4", "nope"}},
		"untils length":       {Origin: "lists", Scope: "Ip", Values: []string{"1.2.3.4"}, Untils: []int64{1, 2}},
		"negative alert":      {AlertID: -1, Values: []string{"x"}},
		"long value":          {Scope: "Country", Values: []string{strings.Repeat("x", MaxText+1)}},
		"long origin":         {Origin: strings.Repeat("o", MaxName+1), Values: []string{"x"}},
	} {
		if err := (Command{Type: CmdImportList, Body: b}).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// gated: a leader writes it only when every voter applies it
	if Baseline(CmdImportList) || !Supported(CmdImportList) || CmdImportList&IgnorableFlag != 0 {
		t.Error("ImportList must be a gated, non-ignorable command")
	}
	// a hostile entry whose untils do not match its values still applies
	// deterministically (the missing ones take Until)
	h := newHarness(t)
	r := h.apply(CmdImportList, T0, ImportList{Origin: "lists", Type: "ban", Scope: "Ip", Scenario: "a", Until: T0 + hour,
		Untils: []int64{T0 + 2*hour}, Values: []string{"1.1.1.1", "1.1.1.2"}})
	if r.Err() != nil || r.N != 2 {
		t.Fatalf("mismatched untils: %+v", r)
	}
	if d := h.f.Decisions(&DecisionFilter{Value: "1.1.1.2"}, at(T0)); len(d) != 1 || d[0].Until != T0+hour {
		t.Errorf("value without its own until: %+v", d)
	}
}
