package fsm

import (
	"slices"
	"testing"
)

// TestAutoDelete: machines and bouncers not seen for longer than the age
// of their auth type are deleted at the entry's time (the leader clock);
// never-seen ones, machines owning alerts, auth types without an age and
// those seen recently stay.
func TestAutoDelete(t *testing.T) {
	h := newHarness(t)
	mk := func(id, auth string) {
		h.must(CmdMachineCreate, T0, MachineCreate{Machine: Machine{ID: id, AuthType: auth, Validated: true}})
	}
	mk("pw-old", AuthPassword)
	mk("pw-fresh", AuthPassword)
	mk("pw-never", AuthPassword)
	mk("pw-alerts", AuthPassword)
	mk("tls-old", AuthTLS)
	bk := func(name, auth string) {
		h.must(CmdBouncerCreate, T0, BouncerCreate{Bouncer: Bouncer{Name: name, KeyHash: "h-" + name, AuthType: auth}})
	}
	bk("key-old", AuthAPIKey)
	bk("key-fresh", AuthAPIKey)
	bk("key-never", AuthAPIKey)
	bk("tls-old", AuthTLS)
	h.must(CmdTouch, T0+hour, Touch{
		Machines: []MachineTouch{{ID: "pw-old", LastHeartbeat: T0 + hour}, {ID: "pw-alerts", LastHeartbeat: T0 + hour},
			{ID: "tls-old", LastHeartbeat: T0 + hour}, {ID: "pw-fresh", LastHeartbeat: T0 + 30*hour}},
		Bouncers: []BouncerTouch{{Name: "key-old", LastPull: T0 + hour}, {Name: "tls-old", LastPull: T0 + hour},
			{Name: "key-fresh", LastPull: T0 + 30*hour}},
	})
	h.alert(T0+2*hour, "pw-alerts", Alert{})

	ages := AutoDelete{AgentsPassword: 24 * hour, BouncersAPIKey: 24 * hour}
	// 24 h after the last contact exactly: due (CrowdSec's "<=")
	now := T0 + 25*hour
	m, b := h.f.AutoDeleteDue(ages, at(now))
	if !slices.Equal(m, []string{"pw-old"}) || !slices.Equal(b, []string{"key-old"}) {
		t.Fatalf("due at +25h: machines %v bouncers %v", m, b)
	}
	if m, b := h.f.AutoDeleteDue(ages, at(now-sec)); len(m)+len(b) != 0 {
		t.Fatalf("due a second early: %v %v", m, b)
	}
	if res := h.must(CmdAutoDelete, now, ages); res.N != 2 {
		t.Fatalf("deleted %d, want 2", res.N)
	}
	for _, id := range []string{"pw-fresh", "pw-never", "pw-alerts", "tls-old"} {
		if h.f.Machine(id) == nil {
			t.Errorf("machine %s deleted", id)
		}
	}
	if h.f.Machine("pw-old") != nil || h.f.Bouncer("key-old") != nil {
		t.Error("stale password machine or api-key bouncer kept")
	}
	for _, n := range []string{"key-fresh", "key-never", "tls-old"} {
		if h.f.Bouncer(n) == nil {
			t.Errorf("bouncer %s deleted", n)
		}
	}
	// cert ages reach the cert ones only
	if res := h.must(CmdAutoDelete, now, AutoDelete{AgentsCert: hour, BouncersCert: hour}); res.N != 2 ||
		h.f.Machine("tls-old") != nil || h.f.Bouncer("tls-old") != nil || h.f.Bouncer("key-fresh") == nil {
		t.Fatalf("cert autodelete: n=%d", res.N)
	}
	// an empty command deletes nothing
	if res := h.must(CmdAutoDelete, now+1000*hour, AutoDelete{}); res.N != 0 {
		t.Fatalf("no ages deleted %d", res.N)
	}
}

func TestAutoDeleteValidateAndGating(t *testing.T) {
	if err := (Command{Type: CmdAutoDelete, Body: &AutoDelete{AgentsCert: -1}}).Validate(); err == nil {
		t.Fatal("negative age accepted")
	}
	if err := (Command{Type: CmdAutoDelete, Body: &AutoDelete{AgentsCert: hour}}).Validate(); err != nil {
		t.Fatal(err)
	}
	if Baseline(CmdAutoDelete) || !slices.Contains(Extensions(), uint8(CmdAutoDelete)) {
		t.Fatal("AutoDelete must be a gated extension")
	}
}
