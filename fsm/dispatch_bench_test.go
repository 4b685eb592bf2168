package fsm

import "testing"

// BenchmarkSmallCommands is the per-entry cost of what every node does with
// a small command (decode, dispatch, apply, publish) plus the leader's
// Validate: where the command registry's dispatch would show if it cost
// anything next to the JSON decode.
func BenchmarkSmallCommands(b *testing.B) {
	h := newBenchHarness(b)
	h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: "m1", AuthType: AuthPassword}})
	h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: "b1", KeyHash: "k", AuthType: AuthAPIKey}})
	entries := [][]byte{
		entry(b, CmdMachineUpdate, T0, MachineUpdate{ID: "m1", IP: ptr("1.2.3.4"), Version: ptr("v1.7.6")}),
		entry(b, CmdTouch, T0, Touch{Machines: []MachineTouch{{ID: "m1", LastHeartbeat: T0}}, Bouncers: []BouncerTouch{{Name: "b1", LastPull: T0, Cursor: 9}}}),
		entry(b, CmdSetConfig, T0, SetConfig{Key: "capi:cursor", Value: []byte("42")}),
		entry(b, CmdDecisionsExpire, T0, DecisionsExpire{IDs: []int64{99}}),
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e := entries[i%len(entries)]
		c, err := Decode(e)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			b.Fatal(err)
		}
		h.raw(e)
	}
}
