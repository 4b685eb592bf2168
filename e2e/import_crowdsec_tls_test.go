//go:build cgo || sqlite_modernc

package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/go-openapi/strfmt"

	"github.com/crowdsecurity/crowdsec/pkg/apiserver/middlewares/v1"
)

// Machines and bouncers CrowdSec created for client certificates (named
// CN@IP, auth type tls) keep working after the import: the certificate of
// the same CN from the same address finds the imported record.
func TestImportCrowdSecTLSClients(t *testing.T) {
	ref := newCSReference(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pw := strfmt.Password("unused-random-password")
	id := "certagent@127.0.0.1"
	if _, err := ref.DB.CreateMachine(ctx, &id, &pw, "127.0.0.1", true, false, "tls"); err != nil {
		t.Fatal(err)
	}
	if _, err := ref.DB.CreateBouncer(ctx, "certfw@127.0.0.1", "127.0.0.1", v1.HashSHA512("random"), "tls", true); err != nil {
		t.Fatal(err)
	}

	sc := startSecureCluster(t, 1)
	n1 := sc.Nodes[0]
	rep := runImport(t, n1.Server, "--crowdsec-config", ref.ConfigPath)
	checkCounts(t, "import", rep, map[string][3]int{"machines": {4, 0, 0}, "bouncers": {3, 0, 1}})
	count := func(kind string) int {
		var list []map[string]any
		if err := json.Unmarshal([]byte(n1.MustCLI(kind, "list", "-o", "json")), &list); err != nil {
			t.Fatal(err)
		}
		return len(list)
	}
	machines, bouncers := count("machines"), count("bouncers")

	agent := issueCert(t, n1, "agent", "certagent", n1.URL)
	c := newCertAgent(t, loadAgentCredentials(t, agent.Cfg), n1.URL)
	if code, err := certLogin(c); err != nil || code != http.StatusOK {
		t.Fatalf("certificate login of the imported tls machine: %d %v", code, err)
	}
	fw := issueCert(t, n1, "bouncer", "certfw", n1.URL)
	lb := certLiveBouncer(t, bouncerFiles(t, fw.Cfg), n1.URL)
	if code, _, err := liveStatus(lb, "192.0.2.10"); err != nil || code != http.StatusOK {
		t.Fatalf("certificate bouncer: %d %v", code, err)
	}
	// the imported records were used: none was created for the certificates
	if m, b := count("machines"), count("bouncers"); m != machines || b != bouncers {
		t.Errorf("machines %d→%d, bouncers %d→%d: a certificate client got a new record", machines, m, bouncers, b)
	}
}
