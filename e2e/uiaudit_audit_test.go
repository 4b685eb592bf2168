package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// auditRecord is one line of `halapi audit list -o json` (fsm.AuditRecord).
type auditRecord struct {
	Time   time.Time `json:"time"`
	Index  uint64    `json:"index"`
	Node   string    `json:"node"`
	Who    string    `json:"who"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

func auditList(nd *ClusterNode, limit int) ([]auditRecord, error) {
	out, err := nd.CLI("audit", "list", "--limit", fmt.Sprint(limit), "-o", "json")
	if err != nil {
		return nil, err
	}
	var recs []auditRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		return nil, fmt.Errorf("audit list -o json: %v: %q", err, out)
	}
	return recs, nil
}

// cliWho is who the admin socket records for this test's CLI calls.
func cliWho() string {
	if runtime.GOOS == "linux" {
		return fmt.Sprintf("cli:uid=%d", os.Geteuid())
	}
	return "cli"
}

// A write made through a follower's admin socket is recorded once, with
// the follower as node and the CLI's uid as who, and every node lists the
// same record (same raft index and leader time).
func TestUIAuditCLIWritesReplicated(t *testing.T) {
	c := StartCluster(t, 3, 35)
	leader := c.Leader(c.Node(1))
	follower := c.Others(leader)[0]
	ip := "192.0.2.35"

	follower.MustCLI("decisions", "add", "--ip", ip, "--duration", "1h", "--reason", "audit e2e")
	follower.MustCLI("decisions", "delete", "--ip", ip)
	// a refused write (404) is not recorded
	if _, err := follower.CLI("machines", "delete", "ghost"); err == nil {
		t.Fatal("deleting an unknown machine succeeded")
	}

	want := []struct{ action, detail string }{
		{"DELETE /decisions", "ip=" + ip},
		{"POST /decisions", ""},
	}
	var ref []auditRecord
	for _, nd := range c.Nodes {
		var recs []auditRecord
		waitFor(t, convergeTimeout, nd.ID+" lists both audit records", func() (bool, string) {
			var err error
			recs, err = auditList(nd, 10)
			if err != nil {
				return false, err.Error()
			}
			return len(recs) >= 2, fmt.Sprintf("%d records: %+v", len(recs), recs)
		})
		if len(recs) != 2 {
			t.Fatalf("%s: %d audit records, want 2: %+v", nd.ID, len(recs), recs)
		}
		for i, w := range want {
			r := recs[i]
			if r.Node != follower.ID || r.Who != cliWho() || r.Action != w.action || r.Detail != w.detail || r.Index == 0 || r.Time.IsZero() {
				t.Errorf("%s: record %d = %+v, want node %s who %s action %q detail %q", nd.ID, i, r, follower.ID, cliWho(), w.action, w.detail)
			}
		}
		if recs[0].Index <= recs[1].Index || recs[0].Time.Before(recs[1].Time) {
			t.Errorf("%s: not newest first: %+v", nd.ID, recs)
		}
		if ref == nil {
			ref = recs
		} else if fmt.Sprint(recs) != fmt.Sprint(ref) {
			t.Errorf("%s lists other records than %s:\n%+v\n%+v", nd.ID, c.Nodes[0].ID, recs, ref)
		}
	}

	// the table, newest first, and the limit
	out := leader.MustCLI("audit", "list", "--limit", "1")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "TIME") || !strings.Contains(lines[0], "WHO") ||
		!strings.Contains(lines[1], "DELETE /decisions") || !strings.Contains(lines[1], follower.ID) {
		t.Errorf("audit list --limit 1:\n%s", out)
	}
	// bad input: one line, non-zero exit
	_, err := leader.CLI("audit", "list", "--limit", "0")
	if err == nil || !strings.Contains(err.Error(), "--limit must be between 1 and") {
		t.Errorf("audit list --limit 0: %v", err)
	}
}
