package fsm

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func auditBody(i int) AuditAppend {
	return AuditAppend{Node: "n1", Who: "cert:alice", Action: "decision.add", Target: fmt.Sprintf("10.0.%d.%d", i/256, i%256), Detail: fmt.Sprint(i)}
}

func TestAuditValidateBounds(t *testing.T) {
	ok := auditBody(1)
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid record refused: %v", err)
	}
	if err := (AuditAppend{Node: "n", Who: "w", Action: "a"}).Validate(); err != nil {
		t.Fatalf("minimal record refused: %v", err)
	}
	long := func(n int) string { return strings.Repeat("é", n/2+1) } // n+1 or n+2 bytes
	for name, b := range map[string]AuditAppend{
		"no node":          {Who: "w", Action: "a"},
		"no who":           {Node: "n", Action: "a"},
		"no action":        {Node: "n", Who: "w"},
		"long node":        {Node: long(MaxAuditNode), Who: "w", Action: "a"},
		"long who":         {Node: "n", Who: long(MaxAuditWho), Action: "a"},
		"long action":      {Node: "n", Who: "w", Action: long(MaxAuditAction)},
		"long target":      {Node: "n", Who: "w", Action: "a", Target: long(MaxAuditTarget)},
		"long detail":      {Node: "n", Who: "w", Action: "a", Detail: long(MaxAuditDetail)},
		"newline in who":   {Node: "n", Who: "alice\nroot", Action: "a"},
		"escape in detail": {Node: "n", Who: "w", Action: "a", Detail: "\x1b[2Jcleared"},
		"C1 in target":     {Node: "n", Who: "w", Action: "a", Target: "x\u009by"},
		"DEL in action":    {Node: "n", Who: "w", Action: "a\x7f"},
		"bad UTF-8":        {Node: "n", Who: "w\xff", Action: "a"},
	} {
		err := b.Validate()
		if err == nil || CodeOf(err) != CodeInvalid {
			t.Errorf("%s: Validate = %v, want an invalid-command error", name, err)
		}
	}
	// exactly at the bounds is fine
	at := AuditAppend{Node: strings.Repeat("n", MaxAuditNode), Who: strings.Repeat("w", MaxAuditWho),
		Action: strings.Repeat("a", MaxAuditAction), Target: strings.Repeat("t", MaxAuditTarget), Detail: strings.Repeat("d", MaxAuditDetail)}
	if err := at.Validate(); err != nil {
		t.Fatalf("record at the bounds refused: %v", err)
	}
}

// A peer's entry is untrusted: the leader's DecodeValid refuses a hostile
// body before it is committed, and Apply of one committed anyway (an older
// leader) stays total.
func TestAuditHostileEntryRefused(t *testing.T) {
	hostile := []AuditAppend{
		{Node: "n1", Who: "alice\r\nFAKE RECORD", Action: "unban"},
		{Node: "n1", Who: "alice", Action: strings.Repeat("x", MaxAuditAction+1)},
		{Node: "n1", Who: "alice", Action: "a", Detail: strings.Repeat("d", 1<<20)},
		{Who: "alice", Action: "a"},
	}
	for i, b := range hostile {
		data, err := Command{Type: CmdAuditAppend, Time: T0, Body: b}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeValid(data); err == nil || CodeOf(err) != CodeInvalid {
			t.Errorf("hostile entry %d: DecodeValid = %v, want invalid", i, err)
		}
	}
	// wrong JSON types for the fields: undecodable, skipped with an error
	h := newHarness(t)
	bad := append(entry(t, CmdAuditAppend, T0, AuditAppend{Node: "n", Who: "w", Action: "a"})[:10], []byte(`{"node":1,"who":["x"]}`)...)
	if res := h.raw(bad).(*Result); res.Code != CodeInvalid {
		t.Fatalf("undecodable audit entry: %+v", res)
	}
	if n := h.f.AuditLen(); n != 0 {
		t.Fatalf("undecodable entry stored %d records", n)
	}
}

func TestAuditAppendUsesEntryTimeAndIndex(t *testing.T) {
	h := newHarness(t)
	h.must(CmdAuditAppend, T0+5*sec, auditBody(1))
	h.must(CmdAuditAppend, T0+9*sec, AuditAppend{Node: "n2", Who: "link:bob", Action: "unban", Target: "42"})
	got := h.f.AuditLog(0)
	if len(got) != 2 {
		t.Fatalf("AuditLog(0) = %d records, want 2", len(got))
	}
	want := AuditRecord{Time: time.Unix(0, T0+9*sec).UTC(), Index: 2, Node: "n2", Who: "link:bob", Action: "unban", Target: "42"}
	if got[0] != want {
		t.Fatalf("newest = %+v, want %+v", got[0], want)
	}
	if got[1].Index != 1 || !got[1].Time.Equal(time.Unix(0, T0+5*sec)) || got[1].Target != "10.0.0.1" {
		t.Fatalf("oldest = %+v", got[1])
	}
	if l := h.f.AuditLog(1); len(l) != 1 || l[0].Index != 2 {
		t.Fatalf("AuditLog(1) = %+v", l)
	}
	// the returned records are copies: changing one changes nothing stored
	got[0].Who = "mallory"
	if h.f.AuditLog(1)[0].Who != "link:bob" {
		t.Fatal("AuditLog returned stored records, not copies")
	}
}

// The ring keeps the last AuditCap records, newest first, and never
// changes a state published before an add (checked around the wrap, where
// blocks are dropped).
func TestAuditRingWraps(t *testing.T) {
	h := &harness{t: t, f: New(quietLogger()), noImage: true}
	total := AuditCap + 3*auditChunk + 17
	for i := 1; i <= total; i++ {
		// the published-state check where the ring changes shape: the
		// first drop, the first whole block dropped, the end
		wrap := i >= AuditCap-1 && i <= AuditCap+2
		block := i >= AuditCap+auditChunk-1 && i <= AuditCap+auditChunk+1
		h.noImage = !(wrap || block || i > total-3)
		h.must(CmdAuditAppend, T0+int64(i)*sec, auditBody(i))
		if n := h.f.AuditLen(); n != min(i, AuditCap) {
			t.Fatalf("after %d adds: %d records", i, n)
		}
	}
	all := h.f.AuditLog(0)
	if len(all) != AuditCap {
		t.Fatalf("AuditLog(0) = %d records, want %d", len(all), AuditCap)
	}
	for j, r := range all {
		if want := uint64(total - j); r.Index != want || r.Detail != fmt.Sprint(want) {
			t.Fatalf("record %d: index %d detail %q, want %d", j, r.Index, r.Detail, want)
		}
	}
	if l := h.f.AuditLog(AuditCap + 5); len(l) != AuditCap {
		t.Fatalf("AuditLog(cap+5) = %d records", len(l))
	}
	if l := h.f.AuditLog(3); len(l) != 3 || l[2].Index != uint64(total-2) {
		t.Fatalf("AuditLog(3) = %+v", l)
	}
	// dropped records do not pile up: at most one partly dropped block
	s := h.f.read()
	if held := len(s.audit.blocks) * auditChunk; held > AuditCap+2*auditChunk {
		t.Fatalf("%d blocks held for %d records", len(s.audit.blocks), s.audit.n)
	}
	if s.audit.skip >= len(s.audit.blocks[0]) {
		t.Fatalf("skip %d covers the whole first block", s.audit.skip)
	}
}

func TestAuditSnapshotRoundTrip(t *testing.T) {
	h := &harness{t: t, f: New(quietLogger()), noImage: true}
	for i := 1; i <= AuditCap+40; i++ {
		h.must(CmdAuditAppend, T0+int64(i)*sec, auditBody(i))
	}
	data := persist(t, mustSnapshot(t, h.f))
	r := restored(t, data)
	got, want := r.AuditLog(0), h.f.AuditLog(0)
	if !slices.Equal(got, want) {
		t.Fatalf("restored audit differs: %d vs %d records; newest %+v vs %+v", len(got), len(want), got[0], want[0])
	}
	// both go on identically
	next := entry(t, CmdAuditAppend, T0+hour, AuditAppend{Node: "n9", Who: "w", Action: "after"})
	h.raw(next)
	r.Apply(rawLog(h.idx, next))
	if !slices.Equal(r.AuditLog(0), h.f.AuditLog(0)) {
		t.Fatal("restored and original audit logs diverge after one more entry")
	}

	// a snapshot with more records than the cap keeps the newest AuditCap
	var b bytes.Buffer
	b.WriteString(`{"meta":{"version":1,"next_alert_id":1,"next_decision_id":1,"last_index":5}}` + "\n")
	for i := 1; i <= AuditCap+3; i++ {
		fmt.Fprintf(&b, `{"audit":{"time":"2025-01-01T00:00:00Z","index":%d,"node":"n","who":"w","action":"a"}}`+"\n", i)
	}
	big := restored(t, b.Bytes())
	if l := big.AuditLog(0); len(l) != AuditCap || l[0].Index != AuditCap+3 || l[AuditCap-1].Index != 4 {
		t.Fatalf("oversized snapshot: %d records, newest %d", len(l), l[0].Index)
	}
}

// A hostile snapshot (InstallSnapshot from a peer) with an unbounded
// audit record is refused and the state kept.
func TestAuditRestoreRefusesHostileRecord(t *testing.T) {
	h := newHarness(t)
	h.must(CmdAuditAppend, T0, auditBody(1))
	for name, line := range map[string]string{
		"control character":  `{"audit":{"time":"2025-01-01T00:00:00Z","node":"n","who":"a\u001b[31m","action":"a"}}`,
		"oversized detail":   `{"audit":{"time":"2025-01-01T00:00:00Z","node":"n","who":"w","action":"a","detail":"` + strings.Repeat("d", MaxAuditDetail+1) + `"}}`,
		"missing who":        `{"audit":{"time":"2025-01-01T00:00:00Z","node":"n","action":"a"}}`,
		"time past 9999 UTC": `{"audit":{"time":"9999-12-31T23:59:59-01:00","node":"n","who":"w","action":"a"}}`,
	} {
		data := `{"meta":{"version":1,"next_alert_id":1,"next_decision_id":1,"last_index":5}}` + "\n" + line + "\n"
		if err := h.f.Restore(io.NopCloser(strings.NewReader(data))); err == nil || !strings.Contains(err.Error(), "audit") {
			t.Errorf("%s: Restore = %v, want an audit error", name, err)
		}
		if l := h.f.AuditLog(0); len(l) != 1 || l[0].Detail != "1" {
			t.Errorf("%s: state changed by a refused restore: %+v", name, l)
		}
	}
}

func TestAuditCommandIsGated(t *testing.T) {
	if Baseline(CmdAuditAppend) || !Supported(CmdAuditAppend) || !slices.Contains(Extensions(), uint8(CmdAuditAppend)) {
		t.Fatalf("CmdAuditAppend: baseline %v supported %v extensions %v", Baseline(CmdAuditAppend), Supported(CmdAuditAppend), Extensions())
	}
	if CmdAuditAppend != 58 {
		t.Fatal("CmdAuditAppend renumbered")
	}
}
