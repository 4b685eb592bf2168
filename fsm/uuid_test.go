package fsm

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
)

func TestUUIDRoundTrip(t *testing.T) {
	for i := 0; i < 100; i++ {
		s := uuid.NewString()
		u, err := ParseUUID(s)
		if err != nil || u.String() != s || u != UUID(uuid.MustParse(s)) {
			t.Fatalf("%s: parsed %v (%v), back %q", s, u, err, u.String())
		}
	}
	for _, bad := range []string{"u-a", "dec-1", strings.ToUpper(uuid.NewString()), "{" + uuid.NewString() + "}",
		"00000000-0000-4000-8000-00000000000g", "00000000x0000-4000-8000-000000000000", uuid.NewString() + "0"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) accepted", bad)
		}
		if u := MustUUID(bad); !u.IsZero() {
			t.Errorf("MustUUID(%q) = %v, want zero", bad, u)
		}
	}
	if u, err := ParseUUID(""); err != nil || !u.IsZero() || u.String() != "" {
		t.Errorf(`ParseUUID("") = %v, %v`, u, err)
	}
}

// The JSON form of a decision is the one a string UUID had: the canonical
// text, omitted when there is none (snapshots and entries of older
// versions decode, and what is written is unchanged).
func TestDecisionUUIDJSON(t *testing.T) {
	const s = "0b5a7a2c-3e9f-4d1e-9c3a-5f2e8d7c6b1a"
	in := `{"id":3,"uuid":"` + s + `","origin":"cscli","type":"ban","scope":"Ip","value":"1.2.3.4","scenario":"x","created_at":1,"until":2,"ci":4}`
	var d Decision
	if err := json.Unmarshal([]byte(in), &d); err != nil {
		t.Fatal(err)
	}
	if d.UUID.String() != s {
		t.Fatalf("decoded uuid %q", d.UUID.String())
	}
	out, err := json.Marshal(&d)
	if err != nil || string(out) != in {
		t.Fatalf("re-encoded:\n%s\nwant\n%s", out, in)
	}
	d.UUID = UUID{}
	out, _ = json.Marshal(&d)
	if strings.Contains(string(out), "uuid") {
		t.Errorf("zero UUID encoded: %s", out)
	}
	// foreign text (never written by halapi) decodes to no UUID, no error
	if err := json.Unmarshal([]byte(`{"uuid":"u-a"}`), &d); err != nil || !d.UUID.IsZero() {
		t.Errorf("foreign uuid: %v, %v", d.UUID, err)
	}
}
