package e2e

import (
	"testing"
	"time"
)

// TestVeryLongBansAreEnforced: `cscli decisions add -d 99999d` and an
// alert whose stop_at is 9999-12-31 were acknowledged and never enforced
// (the expiry overflowed int64 nanoseconds into the past). They are now
// clamped to 100 years: a real bouncer sees them active with a sane
// duration.
func TestVeryLongBansAreEnforced(t *testing.T) {
	s := StartServer(t)
	w := addMachine(t, s, "cscli-long", "e2e-cscli-long-password-0123456789")
	const key = "e2e-long-bouncer-key-0123456789abcdef"
	addBouncer(t, s, "long-1", key)

	addDecision(t, w, "Ip", "198.51.100.7", "99999d")
	far := cscliAlert("Ip", "198.51.100.8", "4h", "ban", "e2e")
	far.StopAt = ptr("9999-12-31T23:59:59Z")
	pushAlerts(t, w, far)

	lb := newLiveBouncer(t, s, key)
	const century = 36525 * 24 * time.Hour
	for _, ip := range []string{"198.51.100.7", "198.51.100.8"} {
		got := liveGet(t, lb, ip)
		if len(got) != 1 {
			t.Fatalf("Get(%s) = %s, want the ban", ip, fmtDecisions(got))
		}
		checkDecision(t, "Get("+ip+")", got[0], "cscli", "ban", "Ip", ip)
		checkDuration(t, "Get("+ip+")", got[0].Duration, century, 24*time.Hour)
	}
}
