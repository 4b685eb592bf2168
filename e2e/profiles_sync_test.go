package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
)

// Cluster-wide profiles (issue 11): `halapi profiles apply` through any
// node, the replicated set in force on every node, kept across restarts;
// nodes running their own files are flagged in cluster status; SIGHUP
// reloads a node's file.

// profilesYAML is one profile giving every remediation alert a decision
// of type typ for dur (neither is what the default gives: ban 4h).
func profilesYAML(typ, dur string) string {
	return fmt.Sprintf("name: e2e_%s_%s\nfilters:\n  - Alert.Remediation == true\ndecisions:\n  - type: %s\n    duration: %s\non_success: break\n", typ, dur, typ, dur)
}

func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// profilesShow mirrors `halapi profiles show -o json`.
type profilesShow struct {
	Replicated *struct {
		Hash  string   `json:"hash"`
		Files []string `json:"files"`
		SetBy string   `json:"set_by"`
	} `json:"replicated"`
	InUse struct {
		Source       string   `json:"source"`
		Hash         string   `json:"hash"`
		Profiles     []string `json:"profiles"`
		LocalDiffers bool     `json:"local_differs"`
	} `json:"in_use"`
}

func showProfiles(t *testing.T, n *ClusterNode) (profilesShow, error) {
	t.Helper()
	out, err := n.CLI("profiles", "show", "-o", "json")
	if err != nil {
		return profilesShow{}, err
	}
	var v profilesShow
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return profilesShow{}, fmt.Errorf("%w: %s", err, out)
	}
	return v, nil
}

// statusProfiles mirrors the profiles fields of `cluster status -o json`.
type statusProfiles struct {
	Members []struct {
		ID       string `json:"id"`
		Profiles *struct {
			Hash         string `json:"hash"`
			Source       string `json:"source"`
			LocalDiffers bool   `json:"local_differs"`
			Mismatch     bool   `json:"mismatch"`
		} `json:"profiles"`
	} `json:"members"`
	Warnings []string `json:"warnings"`
}

func clusterProfiles(n *ClusterNode) (statusProfiles, string, error) {
	out, err := n.CLI("cluster", "status", "-o", "json")
	if err != nil {
		return statusProfiles{}, "", err
	}
	var st statusProfiles
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, out, err
	}
	return st, out, nil
}

// decisionOf pushes an agent alert for ip to the node and returns the type
// and duration of the decision the node's profiles gave it.
func decisionOf(t *testing.T, c *apiclient.ApiClient, ip string) (string, time.Duration) {
	t.Helper()
	id := pushAlerts(t, c, agentAlert(ip, "crowdsecurity/ssh-bf", 6))[0]
	a := getAlert(t, c, id)
	if len(a.Decisions) != 1 {
		t.Fatalf("alert %d for %s: %d decisions, want 1", id, ip, len(a.Decisions))
	}
	d := a.Decisions[0]
	dur, err := time.ParseDuration(*d.Duration)
	if err != nil {
		t.Fatalf("decision duration %q: %v", *d.Duration, err)
	}
	return *d.Type, dur
}

func wantDecision(t *testing.T, what, gotType string, gotDur time.Duration, wantType string, wantDur time.Duration) {
	t.Helper()
	// the duration is what is left: a little under the profile's
	if gotType != wantType || gotDur > wantDur || gotDur < wantDur-time.Minute {
		t.Fatalf("%s: decision %s %s, want %s %s", what, gotType, gotDur, wantType, wantDur)
	}
}

func TestProfilesSyncApplyThroughFollower(t *testing.T) {
	c := StartCluster(t, 3, 160)
	leader := c.Leader(c.Node(1))
	others := c.Others(leader)
	follower, pusher := others[0], others[1]

	// before any apply every node runs the default, and they agree
	st, out, err := clusterProfiles(leader)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if m.Profiles == nil || m.Profiles.Source != "default" || m.Profiles.Mismatch {
			t.Fatalf("before apply: %s", out)
		}
	}

	dir := t.TempDir()
	file := writeTestFile(t, dir, "profiles.yaml", profilesYAML("captcha", "17h"))
	ndir := filepath.Join(dir, "notifications")
	if err := os.Mkdir(ndir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, ndir, "http.yaml", "type: http\nname: http_default\nformat: '{{.|toJson}}'\nurl: http://127.0.0.1:9/\nmethod: POST\n")
	follower.MustCLI("profiles", "apply", file, "--notification-dir", ndir)

	// bad YAML: one line, exit 1, nothing changed
	bad := writeTestFile(t, dir, "bad.yaml", "name: broken\nfilters: [\n")
	if out, err := follower.CLI("profiles", "apply", bad); err == nil {
		t.Fatalf("bad profiles applied: %s", out)
	} else if msg := err.Error(); !strings.Contains(msg, "exit status 1") || !strings.Contains(msg, "bad.yaml") {
		t.Fatalf("bad profiles: %v", err)
	}
	badExpr := writeTestFile(t, dir, "badexpr.yaml", "name: broken\nfilters:\n  - NoSuchHelper(Alert)\ndecisions:\n  - type: ban\n")
	if _, err := follower.CLI("profiles", "apply", badExpr); err == nil || !strings.Contains(err.Error(), "NoSuchHelper") {
		t.Fatalf("profiles with an unknown helper: %v", err)
	}

	// the apply answered once every reachable node applied it: no wait
	var hash string
	for _, n := range c.Nodes {
		v, err := showProfiles(t, n)
		if err != nil {
			t.Fatal(err)
		}
		if v.InUse.Source != "replicated" || v.Replicated == nil || v.InUse.Hash != v.Replicated.Hash ||
			strings.Join(v.Replicated.Files, ",") != "http.yaml" || len(v.InUse.Profiles) != 1 || v.InUse.Profiles[0] != "e2e_captcha_17h" {
			t.Fatalf("%s after apply: %+v", n.ID, v)
		}
		if hash == "" {
			hash = v.InUse.Hash
		} else if v.InUse.Hash != hash {
			t.Fatalf("%s evaluates %s, another node %s", n.ID, v.InUse.Hash, hash)
		}
	}

	// an alert pushed to another node gets the new profile's decision
	w := addMachine(t, pusher.Server, "profiles-agent", "profiles-agent-pw-0123456789")
	typ, dur := decisionOf(t, w, "198.51.100.10")
	wantDecision(t, "alert on "+pusher.ID, typ, dur, "captcha", 17*time.Hour)

	st, out, err = clusterProfiles(pusher)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Members {
		if m.Profiles == nil || m.Profiles.Hash != hash || m.Profiles.Source != "replicated" || m.Profiles.Mismatch {
			t.Fatalf("status after apply: %s", out)
		}
	}

	// a node killed and restarted keeps them
	pusher.Kill()
	pusher.Restart()
	waitFor(t, convergeTimeout, pusher.ID+" back with the replicated profiles", func() (bool, string) {
		v, err := showProfiles(t, pusher)
		if err != nil {
			return false, err.Error()
		}
		return v.InUse.Source == "replicated" && v.InUse.Hash == hash, fmt.Sprintf("%+v", v.InUse)
	})
	w = newWatcher(t, pusher.Server, "profiles-agent", "profiles-agent-pw-0123456789")
	typ, dur = decisionOf(t, w, "198.51.100.11")
	wantDecision(t, "alert on "+pusher.ID+" after a restart", typ, dur, "captcha", 17*time.Hour)
}

func TestProfilesSyncLocalFileFlaggedAndReloaded(t *testing.T) {
	c := StartCluster(t, 3, 165)
	n3 := c.Node(3)
	dir := t.TempDir()
	file := writeTestFile(t, dir, "profiles.yaml", profilesYAML("captcha", "9h"))
	n3.Stop()
	n3.Profiles = file
	n3.Restart()

	// n3 runs its own file: flagged in every node's status
	waitFor(t, convergeTimeout, "n3 flagged in n1's cluster status", func() (bool, string) {
		st, out, err := clusterProfiles(c.Node(1))
		if err != nil {
			return false, err.Error()
		}
		flagged, others := false, true
		for _, m := range st.Members {
			if m.Profiles == nil {
				return false, out
			}
			if m.ID == "n3" {
				flagged = m.Profiles.Mismatch && m.Profiles.Source == "file"
			} else {
				others = others && !m.Profiles.Mismatch && m.Profiles.Source == "default"
			}
		}
		warned := strings.Contains(strings.Join(st.Warnings, "\n"), "n3 evaluates other profiles")
		return flagged && others && warned, out
	})
	human := c.Node(2).MustCLI("cluster", "status")
	if !strings.Contains(human, "MISMATCH") || !strings.Contains(human, "WARNING: n3 evaluates other profiles") {
		t.Fatalf("human cluster status does not flag n3:\n%s", human)
	}

	w := addMachine(t, n3.Server, "hup-agent", "hup-agent-pw-0123456789")
	typ, dur := decisionOf(t, w, "203.0.113.1")
	wantDecision(t, "n3's file", typ, dur, "captcha", 9*time.Hour)

	// SIGHUP re-reads the file: the next alert gets the new decision
	writeTestFile(t, dir, "profiles.yaml", profilesYAML("ban", "11h"))
	before, err := showProfiles(t, n3)
	if err != nil {
		t.Fatal(err)
	}
	if err := n3.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "n3 reloads its file on SIGHUP", func() (bool, string) {
		v, err := showProfiles(t, n3)
		if err != nil {
			return false, err.Error()
		}
		return v.InUse.Hash != before.InUse.Hash && v.InUse.Source == "file", fmt.Sprintf("%+v", v.InUse)
	})
	typ, dur = decisionOf(t, w, "203.0.113.2")
	wantDecision(t, "n3 after SIGHUP", typ, dur, "ban", 11*time.Hour)

	// a broken file on SIGHUP changes nothing (and the node keeps serving)
	writeTestFile(t, dir, "profiles.yaml", "filters: [\n")
	if err := n3.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, convergeTimeout, "n3 logs the refused reload", func() (bool, string) {
		b, _ := os.ReadFile(n3.logPath)
		return strings.Contains(string(b), "profiles not reloaded"), "no log line yet"
	})
	typ, dur = decisionOf(t, w, "203.0.113.3")
	wantDecision(t, "n3 after a broken reload", typ, dur, "ban", 11*time.Hour)

	// once a set is applied it wins over n3's file, which is reported
	writeTestFile(t, dir, "profiles.yaml", profilesYAML("ban", "11h"))
	applied := writeTestFile(t, dir, "cluster.yaml", profilesYAML("captcha", "13h"))
	c.Node(1).MustCLI("profiles", "apply", applied)
	typ, dur = decisionOf(t, w, "203.0.113.4")
	wantDecision(t, "n3 after an apply", typ, dur, "captcha", 13*time.Hour)
	waitFor(t, convergeTimeout, "n3's ignored file reported", func() (bool, string) {
		st, out, err := clusterProfiles(c.Node(2))
		if err != nil {
			return false, err.Error()
		}
		ok := true
		for _, m := range st.Members {
			ok = ok && m.Profiles != nil && !m.Profiles.Mismatch && m.Profiles.Source == "replicated" &&
				m.Profiles.LocalDiffers == (m.ID == "n3")
		}
		return ok && strings.Contains(strings.Join(st.Warnings, "\n"), "n3: its --profiles file"), out
	})
	b, err := os.ReadFile(n3.logPath)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "differs from the cluster's replicated profiles"); n != 1 {
		t.Fatalf("n3 logged the differing file %d times, want once", n)
	}
}
