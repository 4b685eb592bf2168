package fsm

import (
	"math"
	"testing"
	"time"
)

func TestApplyClampsDecisionExpiry(t *testing.T) {
	h := newHarness(t)
	d := ban("1.2.3.4", math.MaxInt64)
	h.must(CmdAlertsCreate, T0, AlertsCreate{Alerts: []NewAlert{{Alert: Alert{Scenario: "s"}, Decisions: []Decision{d}}}})
	d2 := ban("5.6.7.8", T0+200*365*24*hour)
	h.must(CmdImportDecisions, T0, ImportDecisions{Alert: Alert{Scenario: "capi"}, Decisions: []Decision{d2}})
	short := ban("9.9.9.9", T0+hour)
	h.must(CmdAlertsCreate, T0, AlertsCreate{Alerts: []NewAlert{{Alert: Alert{Scenario: "s"}, Decisions: []Decision{short}}}})
	want := map[string]int64{"1.2.3.4": T0 + MaxDecisionTTL, "5.6.7.8": T0 + MaxDecisionTTL, "9.9.9.9": T0 + hour}
	for v, until := range want {
		ds := h.f.Decisions(&DecisionFilter{Value: v, NoDedup: true, IncludeSimulated: true}, at(T0))
		if len(ds) != 1 || ds[0].Until != until {
			t.Errorf("%s: %+v, want one active decision until %v", v, ds, time.Unix(0, until).UTC())
		}
	}
}

func TestClampHelpers(t *testing.T) {
	if got := AddClamped(math.MaxInt64-5, 10); got != math.MaxInt64 {
		t.Errorf("AddClamped overflow = %d", got)
	}
	if got := AddClamped(math.MinInt64+5, -10); got != math.MinInt64 {
		t.Errorf("AddClamped underflow = %d", got)
	}
	late := time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	if got := ClampUntil(late, math.MaxInt64); got != math.MaxInt64 {
		t.Errorf("ClampUntil near the end of int64 = %d", got)
	}
	if got := UnixNano(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)); got != math.MaxInt64 {
		t.Errorf("UnixNano(9999) = %d", got)
	}
	if got := UnixNano(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)); got != math.MinInt64 {
		t.Errorf("UnixNano(1) = %d", got)
	}
	if got := UnixNano(time.Unix(0, T0)); got != T0 {
		t.Errorf("UnixNano(T0) = %d", got)
	}
}
