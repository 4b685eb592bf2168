package capi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
	"github.com/halapi/halapi/fsm"
)

// The usage metrics agents and bouncers sent reach the Central API once:
// the payload carries each component's unsent metrics, then they are
// marked as forwarded (replicated) and the next payload carries none; a
// 500 leaves them to the next run.
func TestUsageMetricsForwardedOnceThenMarked(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.UsageMetricsInterval = 30 * time.Millisecond
	a := newLocal()
	storeCreds(t, a, fakeCreds(fake, "lapi"), true)
	addMachine(t, a, "agent1", "crowdsecurity/ssh-bf")
	a.mustApply(t, fsm.CmdBouncerCreate, fsm.BouncerCreate{Bouncer: fsm.Bouncer{Name: "fw1", Type: "crowdsec-firewall-bouncer",
		Version: "v0.0.30", AuthType: fsm.AuthAPIKey, KeyHash: "x"}})
	lpItems := `[{"meta":{"utc_now_timestamp":100,"window_size_seconds":1800},"items":[{"name":"read","value":12,"unit":"line","labels":{"datasource_type":"file","source":"/var/log/auth.log"}}]}]`
	rcItems := `[{"meta":{"utc_now_timestamp":200,"window_size_seconds":1800},"items":[{"name":"dropped","value":3,"unit":"request","labels":{"origin":"CAPI","ip_type":"ipv4"}}]}]`
	a.mustApply(t, fsm.CmdUsageAdd, fsm.UsageAdd{Kind: fsm.UsageLogProcessor, Name: "agent1", Metrics: json.RawMessage(lpItems)})
	a.mustApply(t, fsm.CmdUsageAdd, fsm.UsageAdd{Kind: fsm.UsageRemediation, Name: "fw1", Metrics: json.RawMessage(rcItems)})
	fake.Script(capitest.UsageMetrics, capitest.Response{Status: 500}, capitest.Response{Status: 500}, capitest.Response{Status: 500})
	startService(t, cfg, a, nil)

	type comp struct {
		Name    string            `json:"name"`
		Metrics []json.RawMessage `json:"metrics"`
	}
	type payload struct {
		RC []comp `json:"remediation_components"`
		LP []comp `json:"log_processors"`
	}
	waitFor(t, "three usage-metrics sends after the failed one", 10*time.Second, func() bool {
		return fake.Count(capitest.UsageMetrics) >= 3+3
	})
	reqs := fake.Requests(capitest.UsageMetrics)
	decode := func(i int) payload {
		var p payload
		if err := json.Unmarshal(reqs[i].Body, &p); err != nil {
			t.Fatal(err)
		}
		if len(p.RC) != 1 || len(p.LP) != 1 {
			t.Fatalf("payload %d: %s", i, reqs[i].Body)
		}
		return p
	}
	// the failed attempts (the client retries 3 times) and the first
	// accepted one carry the metrics
	for i := 0; i < 4; i++ {
		p := decode(i)
		if len(p.LP[0].Metrics) != 1 || len(p.RC[0].Metrics) != 1 {
			t.Fatalf("send %d lacks the stored metrics: %s", i, reqs[i].Body)
		}
	}
	var lpm, want any
	_ = json.Unmarshal(decode(3).LP[0].Metrics[0], &lpm)
	var wantList []any
	_ = json.Unmarshal([]byte(lpItems), &wantList)
	want = wantList[0]
	if b1, b2 := mustJSON(t, lpm), mustJSON(t, want); b1 != b2 {
		t.Fatalf("forwarded %s, stored %s", b1, b2)
	}
	// accepted: marked as sent in the replicated state, not sent again
	waitFor(t, "records marked", 5*time.Second, func() bool {
		return len(fsm.Unsent(a.f.Machine("agent1").Usage)) == 0 && len(fsm.Unsent(a.f.Bouncer("fw1").Usage)) == 0
	})
	if n := len(a.f.Machine("agent1").Usage); n != 1 {
		t.Fatalf("the last forwarded record is kept for inspect: %d records", n)
	}
	last := decode(len(reqs) - 1)
	if len(last.LP[0].Metrics) != 0 || len(last.RC[0].Metrics) != 0 {
		t.Fatalf("metrics forwarded twice: %s", reqs[len(reqs)-1].Body)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
