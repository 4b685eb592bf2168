package lapi

import (
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
)

// A ban of 99999 days, or with stop_at in year 9999, overflowed int64 unix
// nanoseconds and was stored already expired: acknowledged, never enforced.
// Expiries are now clamped to fsm.MaxDecisionTTL (100 years).
func TestVeryLongDecisionsAreClampedAndEnforced(t *testing.T) {
	if int64(models.MaxDuration) != fsm.MaxDecisionTTL {
		t.Fatalf("models.MaxDuration %v != fsm.MaxDecisionTTL %v", models.MaxDuration, time.Duration(fsm.MaxDecisionTTL))
	}
	e := newEnv(t)
	tok := e.machine("cscli")
	e.bouncer("fw", "key1")
	now := e.now()
	far := manualAlert("Ip", "2.2.2.2", "ban", "4h", now)
	far["stop_at"] = "9999-12-31T23:59:59Z"
	e.expect(e.do("POST", "/v1/alerts", []any{
		manualAlert("Ip", "1.1.1.1", "ban", "99999d", now),
		far,
		manualAlert("Ip", "3.3.3.3", "ban", "9999999999d", now), // past Atoi's day range too
	}, withToken(tok)), 201)

	maxUntil := now.UnixNano() + fsm.MaxDecisionTTL
	for _, ip := range []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"} {
		ds := e.fsm.Decisions(&fsm.DecisionFilter{Value: ip, NoDedup: true}, now)
		if len(ds) != 1 {
			t.Fatalf("%s: %d active decisions, want 1", ip, len(ds))
		}
		if u := ds[0].Until; u <= now.UnixNano() || u > maxUntil {
			t.Errorf("%s: until %v, want in (now, now+100y]", ip, time.Unix(0, u).UTC())
		}
		r := e.expect(e.do("GET", "/v1/decisions?ip="+ip, nil, withKey("key1")), 200)
		var out []struct{ Duration string }
		r.json(t, &out)
		if len(out) != 1 {
			t.Fatalf("%s: bouncer got %q", ip, r.body)
		}
		d, err := time.ParseDuration(out[0].Duration)
		if err != nil || d <= 99*365*24*time.Hour || d > time.Duration(fsm.MaxDecisionTTL) {
			t.Errorf("%s: bouncer duration %q (%v), want about 100 years", ip, out[0].Duration, err)
		}
	}
	// and the stream reports them as new
	r := e.expect(e.do("GET", "/v1/decisions/stream?startup=true", nil, withKey("key1")), 200)
	for _, ip := range []string{"1.1.1.1", "2.2.2.2", "3.3.3.3"} {
		if !strings.Contains(r.body, `"value":"`+ip+`"`) {
			t.Errorf("stream misses %s: %s", ip, r.body)
		}
	}
}

func TestParseDurationClamps(t *testing.T) {
	max := models.MaxDuration
	cases := map[string]time.Duration{
		"4h": 4 * time.Hour, "2d": 48 * time.Hour, "1d12h": 36 * time.Hour, "-1h": -time.Hour,
		"36525d": max, "36526d": max, "99999d": max, "99999999999999999999d": max,
		"-99999d": -max, "99999d2000000h": max, "36524d48h": max,
	}
	for in, want := range cases {
		got, err := models.ParseDuration(in)
		if err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "xd", "1x", "1d1x"} {
		if _, err := models.ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q): no error", in)
		}
	}
}
