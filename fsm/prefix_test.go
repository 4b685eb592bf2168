package fsm

import (
	"testing"
	"unsafe"
)

// A stored decision keeps a Prefix: its IPRange (End included) is
// recomputed exactly, for both families and every prefix length.
func TestPrefixRoundTrip(t *testing.T) {
	for _, v := range []string{"0.0.0.0/0", "1.2.3.4", "1.2.3.4/31", "10.0.0.0/8", "255.255.255.255", "128.0.0.0/1",
		"::/0", "2001:db8::1", "2001:db8::/32", "2001:db8::/64", "2001:db8::/65", "ffff::/127", "::ffff:7.7.7.0/120"} {
		r := mustRange(t, v)
		if got := r.Prefix().Range(); got != r {
			t.Errorf("%s: %+v back as %+v", v, r, got)
		}
		if p := parsePrefix(v); p != r.Prefix() || !p.Valid() {
			t.Errorf("parsePrefix(%s) = %+v", v, p)
		}
	}
	if p := parsePrefix("not-an-ip"); p.Valid() || p.Range().Valid() {
		t.Errorf("parsePrefix(not-an-ip) = %+v", p)
	}
}

// The stored decision record stays in the 176-byte size class (it was
// 192 with a string UUID and a full IPRange): the memory target of a
// million decisions depends on it.
func TestDecisionRecordSize(t *testing.T) {
	if n := unsafe.Sizeof(Decision{}); n > 176 {
		t.Errorf("Decision is %d bytes, want at most 176", n)
	}
}
