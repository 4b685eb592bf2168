package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProfilesExprHelpersServe: the serve flags reach the profile helpers.
// A node started with --hub-data-dir (a data file and GeoLite2 databases
// written by the test), --cti-key/--cti-url (a fake CTI server on
// loopback) and --stash gives each agent alert the decision of the profile
// whose helper matches it.
func TestProfilesExprHelpersServe(t *testing.T) {
	hub := t.TempDir()
	if err := os.WriteFile(filepath.Join(hub, "ips.txt"), []byte("# blocklist\n203.0.113.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeDiffGeoIP(t, hub)
	cti := fakeCTI()
	defer cti.Close()

	const profilesYAML = `name: from_file
filters:
  - Alert.GetValue() in File("ips.txt")
decisions:
  - type: ban
    duration: 48h
on_success: break
---
name: noisy_in_cti
on_error: continue
filters:
  - Alert.Remediation == true && CrowdsecCTI(Alert.GetValue()).GetBackgroundNoiseScore() > 6 && !CrowdsecCTI(Alert.GetValue()).IsFalsePositive()
decisions:
  - type: ban
    duration: 24h
on_success: break
---
name: french
on_error: continue
filters:
  - GeoIPEnrich(Alert.GetValue()).Country.IsoCode == "FR" && GetFromStash("seen", Alert.GetValue()) == ""
decisions:
  - type: captcha
    duration: 2h
duration_expr: "GeoIPASNEnrich(Alert.GetValue()).AutonomousSystemNumber == 16276 ? '3h' : '1h'"
on_success: break
---
name: default_ip_remediation
filters:
  - Alert.Remediation == true && Alert.GetScope() == "Ip"
decisions:
  - type: ban
    duration: 4h
on_success: break
`
	s := NewServer(t, WithProfiles(profilesYAML))
	s.ExtraArgs = append(s.ExtraArgs, "--hub-data-dir", hub, "--cti-key", diffCTIKey, "--cti-url", cti.URL+"/v2",
		"--cti-cache-ttl", "1h", "--stash", "seen:100:1h")
	s.Start()
	w := addMachine(t, s, "helpers-agent", "e2e-helpers-agent-password-0123456789")
	const key = "e2e-helpers-bouncer-key-0123456789abcdef"
	addBouncer(t, s, "helpers-bouncer", key)
	lb := newLiveBouncer(t, s, key)

	for _, tc := range []struct {
		ip, typ string
		dur     time.Duration
	}{
		{"203.0.113.7", "ban", 48 * time.Hour}, // in the data file
		{"1.2.3.4", "ban", 24 * time.Hour},     // noisy in the CTI
		{"1.2.3.5", "captcha", 3 * time.Hour},  // FR (GeoIP), AS16276; CTI: not found
		{"198.51.100.1", "ban", 4 * time.Hour}, // nothing known: the default
	} {
		pushAlerts(t, w, agentAlert(tc.ip, "crowdsecurity/http-probing", 6))
		got := liveGet(t, lb, tc.ip)
		if len(got) != 1 {
			t.Fatalf("%s: decisions %s, want one %s", tc.ip, fmtDecisions(got), tc.typ)
		}
		checkDecision(t, tc.ip, got[0], "crowdsec", tc.typ, "Ip", tc.ip)
		checkDuration(t, tc.ip, got[0].Duration, tc.dur, 2*time.Minute)
	}
	// The node never logs the CTI key (the harness's own line with the
	// command line aside).
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "==== harness:") && strings.Contains(line, diffCTIKey) {
			t.Errorf("the CTI key is logged: %s", line)
		}
	}
}
