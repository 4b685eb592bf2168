package models

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a Go duration with an optional leading "<N>d" day
// component, as CrowdSec accepts it ("2d", "1d12h", "4h", "-1h").
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
		if err != nil {
			return 0, fmt.Errorf("time: invalid duration %q", orig)
		}
		days = time.Duration(n) * 24 * time.Hour
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
	d := days + rest
	if neg {
		d = -d
	}
	return d, nil
}
