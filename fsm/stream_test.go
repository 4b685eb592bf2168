package fsm

import (
	"testing"
)

// ipScopes is the stream's default scope filter (lapi.md §4.12 step 3).
var ipScopes = []string{"Ip", "Range"}

func TestStreamStartup(t *testing.T) {
	h := newHarness(t)
	active := h.dec(T0, ban("1.1.1.1", T0+hour))
	expired := h.dec(T0, ban("2.2.2.2", T0-hour)) // replayed old log: already expired
	hand := h.dec(T0, ban("3.3.3.3", T0+hour))
	boundary := h.dec(T0, ban("4.4.4.4", T0+mins)) // until == query time: not active
	country := h.dec(T0, withScope(ban("FR", T0+hour), "Country"))
	sim := h.simDec(T0, ban("5.5.5.5", T0+hour))
	h.expire(T0+sec, hand)

	now := at(T0 + mins)
	newD, deleted, idx := h.f.Stream(&DecisionFilter{Scopes: ipScopes}, StreamCursor{}, true, now)
	checkIDs(t, "startup new", newD, active)
	checkIDs(t, "startup deleted", deleted, expired, hand, boundary)
	if idx != h.idx {
		t.Errorf("index = %d, want last applied %d", idx, h.idx)
	}
	// a zero cursor without startup is a startup too
	n2, d2, _ := h.f.Stream(&DecisionFilter{Scopes: ipScopes}, StreamCursor{}, false, now)
	checkIDs(t, "zero-cursor new", n2, active)
	checkIDs(t, "zero-cursor deleted", d2, expired, hand, boundary)
	// startup ignores the cursor
	n3, d3, _ := h.f.Stream(&DecisionFilter{Scopes: ipScopes}, StreamCursor{Index: idx, LastPull: T0 + mins}, true, now)
	checkIDs(t, "startup with cursor new", n3, active)
	checkIDs(t, "startup with cursor deleted", d3, expired, hand, boundary)
	// every scope, simulated included
	n4, _, _ := h.f.Stream(&DecisionFilter{IncludeSimulated: true}, StreamCursor{}, true, now)
	checkIDs(t, "all scopes + simulated", n4, active, country, sim)
	// an empty state gives empty lists and index 0
	e := newHarness(t)
	n5, d5, i5 := e.f.Stream(&DecisionFilter{}, StreamCursor{}, true, now)
	if len(n5) != 0 || len(d5) != 0 || i5 != 0 {
		t.Errorf("empty FSM stream = %v %v %d", n5, d5, i5)
	}
}

func TestStreamDedupLongestWins(t *testing.T) {
	h := newHarness(t)
	b1 := h.dec(T0, ban("1.2.3.4", T0+1*hour))
	b2 := h.dec(T0, ban("1.2.3.4", T0+2*hour))
	b3 := h.dec(T0, ban("1.2.3.4", T0+3*hour))
	captcha := h.dec(T0, withType(ban("1.2.3.4", T0+hour), "captcha"))
	rng := h.dec(T0, withScope(ban("1.2.3.4", T0+hour), "Range")) // same value, other scope
	other := h.dec(T0, ban("9.9.9.9", T0+hour))
	flt := &DecisionFilter{Scopes: ipScopes}

	newD, deleted, _ := h.f.Stream(flt, StreamCursor{}, true, at(T0+mins))
	checkIDs(t, "new", newD, b3, captcha, rng, other)
	checkIDs(t, "deleted", deleted)
	// dedup can be switched off
	newD, _, _ = h.f.Stream(&DecisionFilter{Scopes: ipScopes, NoDedup: true}, StreamCursor{}, true, at(T0+mins))
	checkIDs(t, "new without dedup", newD, b1, b2, b3, captcha, rng, other)
	// live queries never dedup
	checkIDs(t, "live", h.f.Decisions(&DecisionFilter{Value: "1.2.3.4"}, at(T0+mins)), b1, b2, b3, captcha, rng)

	// expire the 3h ban: the 2h one takes its place, nothing deleted for the IP
	h.expire(T0+2*mins, b3)
	newD, deleted, _ = h.f.Stream(flt, StreamCursor{}, true, at(T0+3*mins))
	checkIDs(t, "new after expiring 3h", newD, b2, captcha, rng, other)
	checkIDs(t, "deleted after expiring 3h", deleted)

	// expire the others one after the other: only the last one shows
	h.expire(T0+4*mins, b2)
	h.expire(T0+5*mins, b1)
	newD, deleted, _ = h.f.Stream(flt, StreamCursor{}, true, at(T0+6*mins))
	checkIDs(t, "new after expiring all bans", newD, captcha, rng, other)
	checkIDs(t, "deleted after expiring all bans", deleted, b1)

	// equal until: ties keep all
	h2 := newHarness(t)
	x := h2.dec(T0, ban("5.5.5.5", T0+hour))
	y := h2.dec(T0, withOrigin(ban("5.5.5.5", T0+hour), "crowdsec"))
	newD, _, _ = h2.f.Stream(flt, StreamCursor{}, true, at(T0))
	checkIDs(t, "ties", newD, x, y)
	// expired together (one DELETE): all appear in deleted
	h2.expire(T0+mins, x, y)
	_, deleted, _ = h2.f.Stream(flt, StreamCursor{}, true, at(T0+2*mins))
	checkIDs(t, "expired together", deleted, x, y)
}

// Dedup happens on the whole table before filters (lapi.md §4.12, surprise 3).
func TestStreamDedupBeforeFilters(t *testing.T) {
	h := newHarness(t)
	long := h.dec(T0, withScenario(withOrigin(ban("1.2.3.4", T0+3*hour), "crowdsec"), "crowdsecurity/ssh-bf"))
	short := h.dec(T0, withScenario(withOrigin(ban("1.2.3.4", T0+hour), "cscli"), "manual"))
	simLong := h.simDec(T0, ban("6.6.6.6", T0+3*hour))
	realShort := h.dec(T0, ban("6.6.6.6", T0+hour))
	now := at(T0 + mins)

	newD, _, _ := h.f.Stream(&DecisionFilter{Scopes: ipScopes, Origins: []string{"cscli"}}, StreamCursor{}, true, now)
	checkIDs(t, "origins=cscli", newD) // both cscli decisions are shorter than another one
	newD, _, _ = h.f.Stream(&DecisionFilter{Scopes: ipScopes, ScenariosContaining: []string{"manual"}}, StreamCursor{}, true, now)
	checkIDs(t, "scenarios_containing=manual", newD)
	newD, _, _ = h.f.Stream(&DecisionFilter{Scopes: ipScopes, Origins: []string{"cscli"}, NoDedup: true}, StreamCursor{}, true, now)
	checkIDs(t, "origins=cscli dedup=false", newD, short, realShort)
	// a simulated longer decision hides a real shorter one from a bouncer
	// that does not want simulated decisions
	newD, _, _ = h.f.Stream(&DecisionFilter{Scopes: ipScopes}, StreamCursor{}, true, now)
	checkIDs(t, "default", newD, long)
	newD, _, _ = h.f.Stream(&DecisionFilter{Scopes: ipScopes, IncludeSimulated: true}, StreamCursor{}, true, now)
	checkIDs(t, "with simulated", newD, long, simLong)
}

func TestStreamFilters(t *testing.T) {
	h := newHarness(t)
	a := h.dec(T0, withScenario(withOrigin(ban("1.0.0.1", T0+hour), "crowdsec"), "crowdsecurity/SSH-bf"))
	b := h.dec(T0, withScenario(withScope(ban("10.0.0.0/8", T0+hour), "Range"), "manual 'ban' from 'x'"))
	c := h.dec(T0, withScenario(withOrigin(withScope(ban("FR", T0+hour), "Country"), "CAPI"), "crowdsecurity/http-probing"))
	d := h.dec(T0, withScenario(withOrigin(ban("1.0.0.2", T0+hour), "lists"), "lists:firehol"))
	e := h.simDec(T0, withOrigin(ban("1.0.0.3", T0+hour), "crowdsec"))
	f := h.dec(T0, withScope(ban("1.0.0.4", T0+hour), "ip")) // profile-made lower-case scope
	now := at(T0 + mins)
	cases := []struct {
		name string
		flt  DecisionFilter
		want []int64
	}{
		{"default scopes", DecisionFilter{Scopes: ipScopes}, []int64{a, b, d}},
		{"all", DecisionFilter{}, []int64{a, b, c, d, f}},
		{"scopes exact", DecisionFilter{Scopes: []string{"ip"}}, []int64{f}},
		{"scopes Country", DecisionFilter{Scopes: []string{"Country"}}, []int64{c}},
		{"origins", DecisionFilter{Origins: []string{"cscli", "CAPI"}}, []int64{b, c, f}},
		{"origins case-sensitive", DecisionFilter{Origins: []string{"capi"}}, nil},
		{"scenarios containing", DecisionFilter{ScenariosContaining: []string{"ssh", "probing"}}, []int64{a, c}},
		{"scenarios not containing", DecisionFilter{ScenariosNot: []string{"ssh", "lists"}}, []int64{b, c, f}},
		{"containing and not", DecisionFilter{ScenariosContaining: []string{"crowdsecurity"}, ScenariosNot: []string{"http"}}, []int64{a}},
		{"simulated", DecisionFilter{Scopes: ipScopes, IncludeSimulated: true}, []int64{a, b, d, e}},
		{"type", DecisionFilter{Type: "captcha"}, nil},
		{"value", DecisionFilter{Value: "1.0.0.2"}, []int64{d}},
		{"ip covering", DecisionFilter{IP: rangeOf(t, "10.1.2.3"), Contains: true}, []int64{b}},
		{"ip inside", DecisionFilter{IP: rangeOf(t, "1.0.0.0/24"), Contains: false}, []int64{a, d, f}},
	}
	for _, tc := range cases {
		flt := tc.flt
		newD, _, _ := h.f.Stream(&flt, StreamCursor{}, true, now)
		checkIDs(t, tc.name, newD, tc.want...)
		// the same filter in delta mode from before everything
		flt2 := tc.flt
		newD, _, _ = h.f.Stream(&flt2, StreamCursor{Index: 0, LastPull: T0 - hour}, false, now)
		checkIDs(t, tc.name+" (delta)", newD, tc.want...)
	}
	// the same filters select deleted entries
	h.expire(T0+2*mins, a, b, c, d, e, f)
	for _, tc := range cases {
		flt := tc.flt
		newD, deleted, _ := h.f.Stream(&flt, StreamCursor{}, true, at(T0+3*mins))
		checkIDs(t, tc.name+" after expiry (new)", newD)
		checkIDs(t, tc.name+" after expiry (deleted)", deleted, tc.want...)
	}
}

func TestStreamDelta(t *testing.T) {
	h := newHarness(t)
	flt := &DecisionFilter{Scopes: ipScopes}
	// before the cursor
	h.dec(T0, ban("1.1.1.1", T0+hour)) // active, never reported again
	handLater := h.dec(T0, ban("2.2.2.2", T0+hour))
	natural := h.dec(T0, ban("3.3.3.3", T0+10*sec))
	slack := h.dec(T0, ban("3.3.3.4", T0+4*sec)) // inside the 2s overlap
	h.dec(T0, ban("3.3.3.5", T0+2*sec))          // expired before the window
	tombAlert, tombIDs := h.alert(T0, "", Alert{}, ban("7.7.7.7", T0+hour))
	shadowAlert, _ := h.alert(T0, "", Alert{}, ban("8.8.8.8", T0+hour))
	h.dec(T0, ban("8.8.8.8", T0+2*hour)) // keeps 8.8.8.8 banned
	handEarly := h.dec(T0, ban("4.4.4.4", T0+hour))
	h.expire(T0+sec, handEarly) // before the cursor
	earlyTombAlert, _ := h.alert(T0, "", Alert{}, ban("4.4.4.5", T0+hour))
	h.deleteAlerts(T0+sec, earlyTombAlert) // before the cursor

	lastPull := T0 + 5*sec
	_, _, cursorIdx := h.f.Stream(flt, StreamCursor{}, true, at(lastPull))
	if cursorIdx != h.idx {
		t.Fatalf("cursor index %d, want %d", cursorIdx, h.idx)
	}
	cur := StreamCursor{Index: cursorIdx, LastPull: lastPull}

	// nothing changed: nothing new, only the natural expiries in the window
	newD, deleted, idx := h.f.Stream(flt, cur, false, at(lastPull))
	checkIDs(t, "unchanged new", newD)
	checkIDs(t, "unchanged deleted", deleted, slack)
	if idx != cursorIdx {
		t.Errorf("index moved without applies: %d", idx)
	}

	// after the cursor
	fresh := h.dec(T0+6*sec, ban("6.6.6.6", T0+hour))
	shorter := h.dec(T0+6*sec, ban("1.1.1.1", T0+30*mins)) // hidden by kept (longer)
	h.dec(T0+6*sec, ban("6.6.6.7", T0-hour))               // created expired: neither new nor deleted
	freshExpired := h.dec(T0+6*sec, ban("6.6.6.8", T0+hour))
	h.expire(T0+7*sec, handLater, freshExpired)
	h.deleteAlerts(T0+8*sec, tombAlert, shadowAlert)

	now := at(T0 + 20*sec)
	newD, deleted, idx = h.f.Stream(flt, cur, false, now)
	checkIDs(t, "delta new", newD, fresh)
	checkIDs(t, "delta deleted", deleted, handLater, natural, slack, tombIDs[0], freshExpired)
	if idx != h.idx {
		t.Errorf("delta index = %d, want %d", idx, h.idx)
	}
	for _, d := range deleted {
		if d.ID == tombIDs[0] && (d.Until != T0+8*sec || d.Value != "7.7.7.7") {
			t.Errorf("tombstone = %+v", d)
		}
	}

	// without dedup the shorter decision is new as well
	newD, _, _ = h.f.Stream(&DecisionFilter{Scopes: ipScopes, NoDedup: true}, cur, false, now)
	checkIDs(t, "delta new, no dedup", newD, fresh, shorter)

	// the next pull from the returned cursor sees nothing new or deleted by hand
	cur2 := StreamCursor{Index: idx, LastPull: now.UnixNano()}
	newD, deleted, _ = h.f.Stream(flt, cur2, false, at(T0+21*sec))
	checkIDs(t, "next pull new", newD)
	checkIDs(t, "next pull deleted", deleted)

	// a cursor with an index but no last pull: no natural-expiry window
	newD, deleted, _ = h.f.Stream(flt, StreamCursor{Index: cursorIdx}, false, now)
	checkIDs(t, "no last pull new", newD, fresh)
	checkIDs(t, "no last pull deleted", deleted, handLater, tombIDs[0], freshExpired)
}

// When the longest decision of an IP is expired by hand while a shorter one
// survives, a delta shows neither (lapi.md §4.12).
func TestStreamDeltaShorterSurvivor(t *testing.T) {
	h := newHarness(t)
	flt := &DecisionFilter{Scopes: ipScopes}
	h.dec(T0, ban("1.2.3.4", T0+hour))
	long := h.dec(T0, ban("1.2.3.4", T0+3*hour))
	_, _, idx := h.f.Stream(flt, StreamCursor{}, true, at(T0))
	h.expire(T0+sec, long)
	newD, deleted, _ := h.f.Stream(flt, StreamCursor{Index: idx, LastPull: T0}, false, at(T0+2*sec))
	checkIDs(t, "new", newD)
	checkIDs(t, "deleted", deleted)
}

// A tombstone is not reported while an equivalent decision (same value,
// type and scope) is active, but is once that one is gone too.
func TestStreamTombstoneShadowing(t *testing.T) {
	h := newHarness(t)
	flt := &DecisionFilter{Scopes: ipScopes}
	a1, ids1 := h.alert(T0, "", Alert{}, ban("1.2.3.4", T0+hour))
	a2, ids2 := h.alert(T0, "", Alert{}, ban("1.2.3.4", T0+2*hour))
	captchaAlert, capIDs := h.alert(T0, "", Alert{}, withType(ban("1.2.3.4", T0+hour), "captcha"))
	_, _, idx := h.f.Stream(flt, StreamCursor{}, true, at(T0))
	cur := StreamCursor{Index: idx, LastPull: T0}

	h.deleteAlerts(T0+sec, a1, captchaAlert)
	_, deleted, _ := h.f.Stream(flt, cur, false, at(T0+2*sec))
	checkIDs(t, "ban shadowed, captcha not", deleted, capIDs[0])

	h.deleteAlerts(T0+3*sec, a2)
	_, deleted, _ = h.f.Stream(flt, cur, false, at(T0+4*sec))
	checkIDs(t, "all bans gone", deleted, ids1[0], ids2[0], capIDs[0])
	// tombstones never show on startup
	newD, deleted, _ := h.f.Stream(flt, StreamCursor{}, true, at(T0+4*sec))
	checkIDs(t, "startup new", newD)
	checkIDs(t, "startup deleted", deleted)
}

// A decision expired by hand after a bouncer's cursor must reach that
// bouncer's next delta as deleted even when its alert is deleted in between
// (Stream doc: "deleted" holds those expired by hand after the cursor;
// lapi.md §8: misses are not harmless). Otherwise the bouncer keeps the ban
// until its original timeout although an operator removed it.
func TestStreamHandExpiredThenAlertDeleted(t *testing.T) {
	h := newHarness(t)
	flt := &DecisionFilter{Scopes: ipScopes}
	aid, ids := h.alert(T0, "", Alert{}, ban("1.2.3.4", T0+4*hour))
	newD, _, idx := h.f.Stream(flt, StreamCursor{}, true, at(T0+sec))
	checkIDs(t, "startup", newD, ids[0])
	cur := StreamCursor{Index: idx, LastPull: T0 + sec}

	h.expire(T0+2*sec, ids[0])    // cscli decisions delete
	h.deleteAlerts(T0+3*sec, aid) // cscli alerts delete / flush, before the next pull

	_, deleted, _ := h.f.Stream(flt, cur, false, at(T0+10*sec))
	checkIDs(t, "delta deleted after hand expiry + alert deletion", deleted, ids[0])
}

func TestStreamNaturalExpiryWindowUsesDedup(t *testing.T) {
	h := newHarness(t)
	flt := &DecisionFilter{Scopes: ipScopes}
	short := h.dec(T0, ban("1.2.3.4", T0+10*sec))
	h.dec(T0, ban("1.2.3.4", T0+hour))
	lone := h.dec(T0, ban("5.6.7.8", T0+10*sec))
	_, _, idx := h.f.Stream(flt, StreamCursor{}, true, at(T0))
	_, deleted, _ := h.f.Stream(flt, StreamCursor{Index: idx, LastPull: T0 + 5*sec}, false, at(T0+20*sec))
	checkIDs(t, "natural expiries", deleted, lone)
	_, deleted, _ = h.f.Stream(&DecisionFilter{Scopes: ipScopes, NoDedup: true}, StreamCursor{Index: idx, LastPull: T0 + 5*sec}, false, at(T0+20*sec))
	checkIDs(t, "natural expiries without dedup", deleted, short, lone)
}
