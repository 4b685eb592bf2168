package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAgentEnrollCertBouncer sets a host up the way an operator does:
// `halapi agent enroll` with a one-time bouncer token, `halapi agent run
// --config` with the file it wrote, and the bouncer's own config (written
// by enroll) pointing at the agent's TLS listener. The bouncer
// authenticates with its certificate through the agent (which presents
// the same certificate upstream), keeps working when the agent's node is
// SIGKILLed, and stays one bouncer row. A certificate crowdsec agent set
// up the same way pushes alerts through its own halapi agent. Client
// certificates live 20 s here: the agents renew their identities from the
// cluster CA before expiry, the crowdsec agent's pushes keep working (its
// certificate-bound token is refused once, it logs in again), and the
// bouncer, still holding its expired copy, keeps working.
func TestAgentEnrollCertBouncer(t *testing.T) {
	const certTTL = 20 * time.Second
	sc := startSecureCluster(t, 3, "--client-cert-ttl", certTTL.String())
	n1 := sc.Node(1)
	tok := strings.TrimSpace(n1.MustCLI("cert", "token", "bouncer", "fw-agent"))
	dir := filepath.Join(t.TempDir(), "fw")
	tlsListen := freeLoopbackAddr(t)
	if out, err := halapiCmd("agent", "enroll", "--url", n1.URL, "--token", tok, "--out", dir,
		"--agent-tls-listen", tlsListen); err != nil {
		t.Fatal(err)
	} else if !strings.Contains(out, "halapi-agent.yaml") {
		t.Fatalf("enroll output does not name the agent config:\n%s", out)
	}
	files := bouncerFiles(t, filepath.Join(dir, "bouncer-tls.yaml"))
	enrolled := leafOf(t, files.Cert)
	// the bouncer's copy as it loaded it at start (the agent rewrites the file)
	oldPair, err := tls.LoadX509KeyPair(files.Cert, files.Key)
	if err != nil {
		t.Fatal(err)
	}
	if files.URL != "https://"+tlsListen+"/" {
		t.Fatalf("bouncer config points at %s, want the agent's TLS listener %s", files.URL, tlsListen)
	}

	ag := startAgent(t, "--config", filepath.Join(dir, "halapi-agent.yaml"))

	// A crowdsec agent enrolled the same way, on its own host (its own
	// halapi agent): it logs in with its certificate through the agent
	// and pushes alerts.
	aTok := strings.TrimSpace(n1.MustCLI("cert", "token", "agent", "web-agent"))
	aDir := filepath.Join(t.TempDir(), "web")
	aTLS := freeLoopbackAddr(t)
	if _, err := halapiCmd("agent", "enroll", "--url", n1.URL, "--token", aTok, "--out", aDir, "--agent-tls-listen", aTLS); err != nil {
		t.Fatal(err)
	}
	creds := loadAgentCredentials(t, filepath.Join(aDir, "local_api_credentials.yaml"))
	if creds.URL != "https://"+aTLS+"/" {
		t.Fatalf("agent credentials point at %s, want the agent's TLS listener %s", creds.URL, aTLS)
	}
	ag2 := startAgent(t, "--config", filepath.Join(aDir, "halapi-agent.yaml"))
	ag2.waitHealthyNodes(t, 3)
	web := newCertAgent(t, creds, "")
	pushAlerts(t, web, agentAlert("192.0.2.91", "crowdsecurity/ssh-bf", 6))
	ag.waitHealthyNodes(t, 3) // learned with its certificate

	n1.MustCLI("decisions", "add", "--ip", "192.0.2.77", "--duration", "1h")
	lb := certLiveBouncer(t, files, "")
	check := func(what string) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() (bool, string) {
			code, ds, err := liveStatus(lb, "192.0.2.77")
			return code == http.StatusOK && valueSet(ds)["192.0.2.77"], fmt.Sprintf("status %d, %v, err %v", code, valueSet(ds), err)
		})
	}
	check("the certificate bouncer to see the ban through the agent")

	st, err := ag.status()
	if err != nil {
		t.Fatal(err)
	}
	victim := preferredNode(t, sc.Nodes, st.Preferred)
	victim.Kill()
	victim.setUp(false)
	start := time.Now()
	code, ds, err := liveStatus(lb, "192.0.2.77")
	if code != http.StatusOK || !valueSet(ds)["192.0.2.77"] {
		t.Fatalf("first query after killing %s: status %d, %v, err %v", victim.ID, code, valueSet(ds), err)
	}
	t.Logf("first certificate-bouncer query after killing %s answered in %v", victim.ID, time.Since(start).Round(time.Millisecond))

	pushAlerts(t, web, agentAlert("192.0.2.92", "crowdsecurity/ssh-bf", 6))

	// Renewal before expiry, from a surviving node's CA.
	for _, a := range []*agentProc{ag, ag2} {
		waitFor(t, certTTL+10*time.Second, "the agent to renew its identity", func() (bool, string) {
			st, err := a.status()
			return err == nil && st.Identity != nil && st.Identity.Renewals >= 1, fmt.Sprintf("%+v %v", st.Identity, err)
		})
	}
	// The crowdsec agent's token is bound to the certificate it logged in
	// with; the agent now presents the renewal: the client's JWT transport
	// logs in again by itself and the push goes through.
	pushAlerts(t, web, agentAlert("192.0.2.93", "crowdsecurity/ssh-bf", 6))
	if renewed := leafOf(t, files.Cert); renewed.SerialNumber.Cmp(enrolled.SerialNumber) == 0 || !renewed.NotAfter.After(enrolled.NotAfter) {
		t.Fatalf("certificate file after the renewal: serial %v until %v; enrolled serial %v until %v",
			renewed.SerialNumber, renewed.NotAfter, enrolled.SerialNumber, enrolled.NotAfter)
	}
	waitFor(t, certTTL+5*time.Second, "the bouncer's copy of the certificate to expire", func() (bool, string) {
		return time.Now().After(enrolled.NotAfter.Add(time.Second)), "not yet"
	})
	// A new connection with the expired copy (a bouncer that has not
	// restarted since enrollment): the agent knows the key and presents
	// the renewal.
	bundle, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(bundle)
	expiredClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{oldPair}}}}
	code, body, err := httpGet(expiredClient, files.URL+"v1/decisions?ip=192.0.2.77")
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), "192.0.2.77") {
		t.Fatalf("expired copy through the agent: %d %s %v", code, body, err)
	}
	// (straight to a node the same copy is refused: expired)
	if code, _, err := httpGet(expiredClient, sc.Others(victim)[0].URL+"v1/decisions?ip=192.0.2.77"); err == nil && code == http.StatusOK {
		t.Fatalf("the expired copy works straight on a node (status %d): the check above proves nothing", code)
	}
	check("the bouncer to keep working through the agent after its certificate's expiry")

	survivor := sc.Others(victim)[0]
	out, err := survivor.CLI("alerts", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range []string{"192.0.2.91", "192.0.2.92", "192.0.2.93"} {
		if n := strings.Count(out, `"`+ip+`"`); n < 1 {
			t.Errorf("alert for %s pushed through the agent not listed:\n%s", ip, out)
		}
	}
	out = survivor.MustCLI("bouncers", "list", "-o", "json")
	if n := countBouncerRows(t, out, "fw-agent"); n != 1 {
		t.Errorf("bouncers list has %d rows for fw-agent, want 1:\n%s", n, out)
	}
}
