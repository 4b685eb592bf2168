package models

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// MaxDuration is the longest duration ParseDuration returns: 100 years
// (36,525 days), fsm.MaxDecisionTTL. Longer values ("99999d") are clamped
// to it, not refused, as the decision expiry is clamped in the FSM: a
// longer ban is enforced for a century, never overflowed into the past.
const MaxDuration = 36525 * 24 * time.Hour

const maxDays = int(MaxDuration / (24 * time.Hour))

// ParseDuration parses a Go duration with an optional leading "<N>d" day
// component, as CrowdSec accepts it ("2d", "1d12h", "4h", "-1h"). The
// result is clamped to ±MaxDuration.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	neg := false
	if strings.HasPrefix(s, "-") {
		neg = true
		s = s[1:]
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("time: invalid duration %q", orig)
		}
		// out of range (ErrRange) saturates and is clamped like the rest
		days = time.Duration(max(min(n, maxDays), -maxDays)) * 24 * time.Hour
		s = s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, err
		}
		rest = d
	} else if days == 0 {
		return 0, fmt.Errorf("time: invalid duration %q", orig)
	}
	var d time.Duration
	switch {
	case rest > 0 && days > MaxDuration-rest:
		d = MaxDuration
	case rest < 0 && days < -MaxDuration-rest:
		d = -MaxDuration
	default:
		d = max(min(days+rest, MaxDuration), -MaxDuration)
	}
	if neg {
		d = -d
	}
	return d, nil
}
