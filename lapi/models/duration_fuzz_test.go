package models

import (
	"testing"
	"time"
)

// FuzzParseDuration: durations from agents, cscli, profiles and CAPI.
// Never a panic, never past ±MaxDuration, and plain Go durations keep
// Go's meaning.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"4h", "1d", "2d12h", "-1h", "99999d", "36525d", "1d-1h", "0s", "15m30s", "100000000000000000000d",
		"-99999d1h", "9223372036854775807ns", "d", "1x", "", "1.5h", "+3d", "--1d", "1d1d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d > MaxDuration || d < -MaxDuration {
			t.Fatalf("ParseDuration(%q) = %v, past ±%v", s, d, MaxDuration)
		}
		if g, gerr := time.ParseDuration(s); gerr == nil && g <= MaxDuration && g >= -MaxDuration && g != d {
			t.Fatalf("ParseDuration(%q) = %v, Go says %v", s, d, g)
		}
	})
}
