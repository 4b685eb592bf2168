package fsm

import (
	"strings"
	"testing"
)

// The registry refuses, at start, a table with a type registered twice, a
// command without an apply function, and type 0.
func TestRegistryRefusesBadTables(t *testing.T) {
	cases := []struct {
		name string
		cmds []command
		want string
	}{
		{"duplicate type", []command{
			baseline(CmdSetJWTKey, (*state).setJWTKey),
			gated(CmdSetJWTKey, (*state).setConfig),
		}, "command type 1 registered twice"},
		{"no apply function", []command{
			baseline(CmdSetJWTKey, (*state).setJWTKey),
			gated[SetConfig](CmdUsageFlush+1, nil),
		}, "command type 51 has no apply function"},
		{"type 0", []command{gated(0, (*state).setConfig)}, "command type 0 registered"},
	}
	for _, tc := range cases {
		if _, err := newRegistry(tc.cmds...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(error).Error(), tc.want) {
					t.Errorf("%s: mustRegistry did not stop the program (recovered %v)", tc.name, r)
				}
			}()
			mustRegistry(tc.cmds...)
		}()
	}
	if _, err := newRegistry(baseline(CmdSetJWTKey, (*state).setJWTKey), gated(CmdUsageAdd, (*state).usageAdd)); err != nil {
		t.Fatalf("a good table is refused: %v", err)
	}
}

// Decode, Validate and Apply all dispatch through the registry: a body of
// another command's type is refused by Validate, and Apply reports a body
// that does not match the entry's type instead of applying it.
func TestRegistryDispatchesByType(t *testing.T) {
	c := Command{Type: CmdSetConfig, Body: SetJWTKey{Key: []byte("k")}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "does not take a fsm.SetJWTKey body") {
		t.Fatalf("validate of a mismatched body: %v", err)
	}
	s := newState()
	res := s.apply(1, Command{Type: CmdSetConfig, Time: T0, Body: &SetJWTKey{Key: []byte("k")}})
	if res.Code != CodeInternal || len(s.jwtKey) != 0 || len(s.config) != 0 {
		t.Fatalf("apply of a mismatched body = %+v, state changed: key %q config %v", res, s.jwtKey, s.config)
	}
	if res := s.apply(2, Command{Type: CmdUsageFlush + 1, Time: T0, Body: &UsageFlush{}}); res.Code != CodeInternal {
		t.Fatalf("apply of an unregistered type = %+v", res)
	}
	data, err := Command{Type: CmdSetConfig, Time: T0, Body: SetConfig{Key: "k", Value: []byte("v")}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := dc.Body.(*SetConfig); !ok || b.Key != "k" || string(b.Value) != "v" {
		t.Fatalf("decoded body %#v", dc.Body)
	}
	if res := s.apply(3, dc); res.Err() != nil || string(s.config["k"]) != "v" {
		t.Fatalf("apply of the decoded command = %+v, config %v", res, s.config)
	}
}

// Every registered command type has an example (exampleCommands), and
// applying each through the test harness leaves the state published before
// it unchanged (harness.raw compares images: invariant 11) and reaches its
// apply function (no "unhandled" result).
func TestEveryCommandLeavesPublishedStateUnchanged(t *testing.T) {
	have := map[CmdType]bool{}
	h := newHarness(t)
	for _, c := range exampleCommands() {
		c.Time = T0 + hour
		data, err := c.Encode()
		if err != nil {
			t.Fatal(err)
		}
		res := h.raw(data).(*Result)
		if res.Code == CodeInternal || res.Code == CodeInvalid {
			t.Errorf("type %d: %+v", c.Type, res)
		}
		have[c.Type] = true
	}
	for _, typ := range CommandTypes() {
		if !have[CmdType(typ)] {
			t.Errorf("command type %d has no example in exampleCommands: the published-state check does not cover it", typ)
		}
	}
}
