package fsm

import (
	"math"
	"time"
)

// MaxDecisionTTL is the longest a decision (or an allowlist item) can
// last: 100 years (36,525 days) from the time of the entry that stores it.
// Longer requests ("-d 99999d", stop_at in year 9999) are clamped to it,
// never refused: the ban is enforced for a century instead of never (an
// expiry past year 2262 overflows int64 unix nanoseconds and used to wrap
// to a date in the past).
const MaxDecisionTTL = int64(36525 * 24 * time.Hour)

// AddClamped returns t+d saturated to the int64 range.
func AddClamped(t, d int64) int64 {
	switch {
	case d > 0 && t > math.MaxInt64-d:
		return math.MaxInt64
	case d < 0 && t < math.MinInt64-d:
		return math.MinInt64
	}
	return t + d
}

// ClampUntil caps an expiry to now + MaxDecisionTTL.
func ClampUntil(now, until int64) int64 {
	return min(until, AddClamped(now, MaxDecisionTTL))
}

// Representable times: time.Time.UnixNano is undefined outside them.
var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// UnixNano is t.UnixNano() saturated to the int64 range (year 9999 gives
// the largest value instead of an overflowed one).
func UnixNano(t time.Time) int64 {
	switch {
	case t.After(maxUnixNano):
		return math.MaxInt64
	case t.Before(minUnixNano):
		return math.MinInt64
	}
	return t.UnixNano()
}
