package fsm

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestStartupWalkSameAsStream: the split walk (dedup resolved up front,
// "new" by ID ranges, "deleted" from the expiry index) gives exactly
// Stream's startup answer, on states full of same-value decisions (ties,
// other types and scopes, expired, expired by hand, IP values written in
// two ways, many decisions on one value).
func TestStartupWalkSameAsStream(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	h := newHarness(t)
	values := []string{"1.2.3.4", "1.2.3.5", "10.0.0.0/24", "10.0.0.0/16", "2001:db8::1", "2001:db8::/64", "FR", "DE", "alice"}
	for i := range 60 { // small groups (a few decisions per value) too
		values = append(values, "5.5.5."+strconv.Itoa(i), "2001:db8::"+strconv.Itoa(i), "u"+strconv.Itoa(i))
	}
	scopes := []string{"Ip", "Range", "Country", "Username", "ip"}
	types := []string{"ban", "captcha"}
	// A few alerts of many decisions (one apply each: the harness checks
	// every published state), simulated ones among them.
	var ids []int64
	var batch []Decision
	flush := func(sim bool) {
		if len(batch) > 0 {
			_, got := h.alert(T0, "", Alert{Simulated: sim}, batch...)
			ids = append(ids, got...)
			batch = nil
		}
	}
	for i := range 1200 {
		d := ban(values[rng.IntN(len(values))], T0+int64(rng.IntN(7)-2)*hour)
		d = withScope(d, scopes[rng.IntN(len(scopes))])
		d = withType(d, types[rng.IntN(len(types))])
		if i%50 == 0 { // a crowd on one value: the map path of appendLosers
			for range 40 {
				batch = append(batch, ban("9.9.9.9", T0+int64(rng.IntN(5)-1)*hour))
			}
		}
		if IsIPScope(d.Scope) {
			if _, err := ParseRange(d.Value); err != nil {
				continue
			}
		}
		batch = append(batch, d)
		if i%100 == 99 {
			flush(i%300 == 299)
		}
	}
	flush(false)
	var hand []int64
	for _, id := range ids {
		if rng.IntN(8) == 0 {
			hand = append(hand, id)
		}
	}
	h.expire(T0+sec, hand...)
	now := at(T0 + mins)
	for _, flt := range []*DecisionFilter{
		{Scopes: ipScopes},
		{Scopes: ipScopes, NoDedup: true},
		{IncludeSimulated: true},
		{Scopes: []string{"Country", "Username"}, Type: "ban"},
		{Scopes: ipScopes, Origins: []string{"nobody"}},
	} {
		newD, deleted, _ := h.f.Stream(flt, StreamCursor{}, true, now)
		w := h.f.View().StartupWalk(flt, now)
		checkIDs(t, "deleted", w.Deleted(), idsOf(deleted)...)
		lo, hi := w.IDSpan()
		for _, parts := range []int64{1, 2, 3, 7, 1000} {
			var got []*Decision
			step := max(1, (hi-lo+parts-1)/parts)
			for a := lo; a < hi; a += step {
				w.New(a, min(a+step, hi), func(d *Decision) bool { got = append(got, d); return true })
			}
			checkIDs(t, "new", got, idsOf(newD)...)
		}
		if len(newD) == 0 && flt.Origins == nil {
			t.Fatalf("filter %+v: empty answer, the test proves nothing", flt)
		}
	}
	// The walk saw the dedup cases it is about.
	if l := h.f.View().StartupWalk(&DecisionFilter{}, now).losers; len(l) < 100 {
		t.Fatalf("only %d outranked decisions in the test state", len(l))
	}
}
