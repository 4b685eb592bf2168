package fsm

import (
	"bytes"
	"testing"
)

// The entry format is a wire format (raft logs, snapshots of older nodes,
// forwarded writes): these bytes were written by aebcc23, before the
// command registry. Encoding gives them again, byte for byte, and they
// decode to the same commands.
func TestEntryBytesUnchanged(t *testing.T) {
	cases := []struct {
		c    Command
		want string
	}{
		{Command{Type: CmdSetConfig, Time: 0x0102030405060708, Body: SetConfig{Key: "k", Value: []byte("v"), IfAbsent: true}},
			"\x01\x10\x01\x02\x03\x04\x05\x06\a\b{\"key\":\"k\",\"value\":\"dg==\",\"if_absent\":true}"},
		{Command{Type: CmdTouch, Time: 1, ID: "req-1", Body: Touch{Bouncers: []BouncerTouch{{Name: "b", Cursor: 3}}}},
			"\x02\x81\x00\x00\x00\x00\x00\x00\x00\x01\x05req-1{\"bouncers\":[{\"name\":\"b\",\"cursor\":3}]}"},
	}
	for _, tc := range cases {
		got, err := tc.c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, []byte(tc.want)) {
			t.Errorf("type %d encodes to %q, want %q", tc.c.Type, got, tc.want)
		}
		dc, err := Decode([]byte(tc.want))
		if err != nil || dc.Type != tc.c.Type || dc.Time != tc.c.Time || dc.ID != tc.c.ID {
			t.Fatalf("decode %q: %+v %v", tc.want, dc, err)
		}
		again, err := dc.Encode()
		if err != nil || !bytes.Equal(again, []byte(tc.want)) {
			t.Errorf("decoded and encoded again: %q, want %q (%v)", again, tc.want, err)
		}
	}
}
