package capi

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
	"github.com/halapi/halapi/fsm"
)

func active(f *fsm.FSM, origin string) map[string]*fsm.Decision {
	out := map[string]*fsm.Decision{}
	for _, d := range f.Decisions(&fsm.DecisionFilter{Origins: []string{origin}}, time.Now()) {
		out[d.Value] = d
	}
	return out
}

func values(ds []*fsm.Decision) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Value)
	}
	sort.Strings(out)
	return out
}

func pull(t *testing.T, s *Service, cl *Client, startup *bool, force bool) PullResult {
	t.Helper()
	res, err := s.Pull(context.Background(), cl, startup, force)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	return res
}

func TestCommunityPull(t *testing.T) {
	fake := newFake(t)
	s, a, cl := newUnstarted(t, fake, testConfig(fake))
	fake.SetStream(capitest.StreamResponse{New: []capitest.NewGroup{
		{Scenario: "crowdsecurity/ssh-bf", Scope: "ip", Decisions: []capitest.Decision{{Value: "1.2.3.4", Duration: "166h"},
			{Value: "1.2.3.5", Duration: "1h"}, {Value: "not-an-ip", Duration: "1h"}, {Value: "1.2.3.4", Duration: "166h"}}},
		{Scenario: "crowdsecurity/http-probing", Scope: "range", Decisions: []capitest.Decision{{Value: "10.0.0.0/8", Duration: "24h"}}},
	}})
	startup := true
	res := pull(t, s, cl, &startup, false)
	if res.New != 3 || startup {
		t.Fatalf("first pull %+v startup=%v", res, startup)
	}
	got := active(a.f, OriginCAPI)
	d := got["1.2.3.4"]
	if len(got) != 3 || d == nil || d.Scope != "Ip" || d.Scenario != "crowdsecurity/ssh-bf" || d.Type != "ban" || d.UUID.IsZero() {
		t.Fatalf("stored %v / %+v", values(a.f.Decisions(&fsm.DecisionFilter{}, time.Now())), d)
	}
	if left := time.Until(time.Unix(0, d.Until)); left < 165*time.Hour || left > 166*time.Hour {
		t.Fatalf("until %v away", left)
	}
	if r := got["10.0.0.0/8"]; r.Scope != "Range" || r.Scenario != "crowdsecurity/http-probing" {
		t.Fatalf("range %+v", r)
	}
	al := a.f.Alert(d.AlertID)
	if al.Source.Scope != CommunitySourceScope || al.Scenario != "update : +3/-0 IPs" || al.MachineID != "" || !al.Remediation {
		t.Fatalf("alert %+v", al)
	}
	// the bouncer view from here
	_, _, cursor := a.f.Stream(&fsm.DecisionFilter{}, fsm.StreamCursor{}, true, time.Now())

	// second pull: no startup; 1.2.3.4 again (replaces, not duplicates),
	// 1.2.3.5 deleted
	fake.SetStream(capitest.StreamResponse{
		New:     []capitest.NewGroup{{Scenario: "crowdsecurity/ssh-bf", Scope: "Ip", Decisions: []capitest.Decision{{Value: "1.2.3.4", Duration: "100h"}}}},
		Deleted: []capitest.DeletedGroup{{Scope: "ip", Decisions: []string{"1.2.3.5", "9.9.9.9"}}}})
	res = pull(t, s, cl, &startup, false)
	if res.New != 1 || res.Deleted != 1 {
		t.Fatalf("second pull %+v", res)
	}
	qs := fake.Requests(capitest.Stream)
	if qs[0].Query.Get("startup") != "true" || qs[1].Query.Has("startup") {
		t.Fatalf("startup queries %v / %v", qs[0].Query, qs[1].Query)
	}
	if qs[0].Query.Has("community_pull") || qs[0].Query.Has("additional_pull") {
		t.Fatalf("pull flags sent while enabled: %v", qs[0].Query)
	}
	all := a.f.Decisions(&fsm.DecisionFilter{Value: "1.2.3.4"}, time.Now())
	if len(all) != 1 || time.Until(time.Unix(0, all[0].Until)) > 101*time.Hour {
		t.Fatalf("re-pulled value must replace the old decision: %d decisions", len(all))
	}
	newD, deleted, _ := a.f.Stream(&fsm.DecisionFilter{}, fsm.StreamCursor{Index: cursor, LastPull: time.Now().UnixNano()}, false, time.Now())
	if strings.Join(values(newD), ",") != "1.2.3.4" || strings.Join(values(deleted), ",") != "1.2.3.5" {
		t.Fatalf("bouncer delta: new %v deleted %v", values(newD), values(deleted))
	}
	if al := a.f.Alert(all[0].AlertID); al.Scenario != "update : +1/-1 IPs" {
		t.Fatalf("second alert %q", al.Scenario)
	}
	// a lists decision with the same value is untouched by CAPI deletions
	if st := readPull(a.f); st.LastPull == 0 || st.LastNew != 1 || st.LastDeleted != 1 {
		t.Fatalf("pull state %+v", st)
	}
}

func TestPullFlagsAndGuard(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.PullCommunity, cfg.PullBlocklists = false, false
	cfg.PullGuard = time.Hour
	s, _, cl := newUnstarted(t, fake, cfg)
	fake.SetStream(capitest.StreamResponse{New: []capitest.NewGroup{{Scenario: "x", Scope: "Ip",
		Decisions: []capitest.Decision{{Value: "1.1.1.1", Duration: "1h"}}}}})
	startup := true
	pull(t, s, cl, &startup, false)
	q := fake.Requests(capitest.Stream)[0].Query
	if q.Get("community_pull") != "false" || q.Get("additional_pull") != "false" {
		t.Fatalf("query %v", q)
	}
	// community decisions stored < guard ago: the next pull is skipped...
	if res := pull(t, s, cl, &startup, false); !res.Skipped || fake.Count(capitest.Stream) != 1 {
		t.Fatalf("guard: %+v, %d stream calls", res, fake.Count(capitest.Stream))
	}
	// ...unless forced
	if res := pull(t, s, cl, &startup, true); res.Skipped || fake.Count(capitest.Stream) != 2 {
		t.Fatal("forced pull skipped")
	}
}

func TestBlocklistPull(t *testing.T) {
	fake := newFake(t)
	s, a, cl := newUnstarted(t, fake, testConfig(fake))
	fake.SetBlocklist("fire", []string{"5.5.5.1", "5.5.5.2", "5.5.5.3", "6.0.0.0/24", "junk", "5.5.5.1"})
	link := fake.BlocklistLink("fire", "ban", "ip", "24h")
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{link}}})
	startup := true
	res := pull(t, s, cl, &startup, false)
	if res.Blocklists["fire"] != 4 {
		t.Fatalf("first pull %+v", res)
	}
	got := active(a.f, OriginLists)
	d := got["5.5.5.1"]
	if len(got) != 4 || d.Scenario != "fire" || d.Scope != "Ip" || d.Type != "ban" {
		t.Fatalf("stored %+v", got)
	}
	al := a.f.Alert(d.AlertID)
	if al.Source.Scope != "lists:fire" || al.Scenario != "update : +4/-0 IPs" {
		t.Fatalf("alert %+v", al)
	}
	dl := fake.Requests(capitest.Blocklist)
	if dl[0].Header.Get("If-Modified-Since") != "" || dl[0].Header.Get("Authorization") != "" {
		t.Fatalf("first download headers %v", dl[0].Header)
	}
	ps := readPull(a.f)
	if ps.Blocklists["fire"].LastPull == "" || ps.Blocklists["fire"].Count != 4 {
		t.Fatalf("pull state %+v", ps)
	}
	_, _, cursor := a.f.Stream(&fsm.DecisionFilter{}, fsm.StreamCursor{}, true, time.Now())
	applied, _ := a.commands(fsm.CmdImportDecisions)

	// unchanged: If-Modified-Since and 304, nothing stored
	res = pull(t, s, cl, &startup, false)
	dl = fake.Requests(capitest.Blocklist)
	if len(dl) != 2 || dl[1].Header.Get("If-Modified-Since") != ps.Blocklists["fire"].LastPull || dl[1].Status != 304 {
		t.Fatalf("second download %+v", dl[1])
	}
	if len(res.NotModified) != 1 {
		t.Fatalf("result %+v", res)
	}
	if n, _ := a.commands(fsm.CmdImportDecisions); n != applied {
		t.Fatal("a 304 stored decisions")
	}

	// changed: 5.5.5.2 dropped, 7.7.7.7 added → dropped one reported deleted
	fake.SetBlocklist("fire", []string{"5.5.5.1", "5.5.5.3", "6.0.0.0/24", "7.7.7.7"})
	res = pull(t, s, cl, &startup, false)
	if res.Blocklists["fire"] != 4 || res.ListsExpired != 1 {
		t.Fatalf("third pull %+v", res)
	}
	newD, deleted, _ := a.f.Stream(&fsm.DecisionFilter{}, fsm.StreamCursor{Index: cursor, LastPull: time.Now().UnixNano()}, false, time.Now())
	if strings.Join(values(deleted), ",") != "5.5.5.2" || len(newD) != 4 {
		t.Fatalf("bouncer delta new %v deleted %v", values(newD), values(deleted))
	}
	if got := active(a.f, OriginLists); len(got) != 4 || got["5.5.5.2"] != nil {
		t.Fatalf("active after change %v", got)
	}

	// a forced pull downloads without If-Modified-Since
	pull(t, s, cl, &startup, true)
	dl = fake.Requests(capitest.Blocklist)
	if h := dl[len(dl)-1].Header.Get("If-Modified-Since"); h != "" || dl[len(dl)-1].Status != 200 {
		t.Fatalf("forced download sent If-Modified-Since %q", h)
	}
}

func TestBlocklistNearExpiryForcesDownload(t *testing.T) {
	fake := newFake(t)
	s, a, cl := newUnstarted(t, fake, testConfig(fake)) // pull interval 1h
	fake.SetBlocklist("short", []string{"8.8.4.4"})
	// decisions last 1h: less than pull interval + 15 min
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{
		fake.BlocklistLink("short", "captcha", "Ip", "1h")}}})
	startup := true
	pull(t, s, cl, &startup, false)
	pull(t, s, cl, &startup, false)
	dl := fake.Requests(capitest.Blocklist)
	if len(dl) != 2 || dl[1].Header.Get("If-Modified-Since") != "" || dl[1].Status != 200 {
		t.Fatalf("near-expiry list not force-downloaded: %+v", dl[1].Header)
	}
	if d := active(a.f, OriginLists)["8.8.4.4"]; d == nil || d.Type != "captcha" {
		t.Fatalf("decision %+v", d)
	}
	if n := len(a.f.Decisions(&fsm.DecisionFilter{Value: "8.8.4.4"}, time.Now())); n != 1 {
		t.Fatalf("%d decisions for the value", n)
	}
}

func TestBlocklistErrors(t *testing.T) {
	fake := newFake(t)
	s, a, cl := newUnstarted(t, fake, testConfig(fake))
	fake.SetBlocklist("ok", []string{"4.4.4.4"})
	dead := capitest.New()
	deadURL := dead.BlocklistURL("x")
	dead.Close()
	links := []capitest.BlocklistLink{
		fake.BlocklistLink("missing", "ban", "Ip", "24h"), // 404: skipped silently
		{Name: "noscope", URL: fake.BlocklistURL("ok"), Duration: "24h"},
		fake.BlocklistLink("ok", "ban", "Ip", "24h"),
		{Name: "down", URL: deadURL, Scope: "Ip", Duration: "24h", Remediation: "ban"}, // network error: aborts
		fake.BlocklistLink("ok2", "ban", "Ip", "24h"),
	}
	fake.SetBlocklist("ok2", []string{"4.4.4.5"})
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{Blocklists: links}})
	startup := true
	_, err := s.Pull(context.Background(), cl, &startup, false)
	if err == nil || !strings.Contains(err.Error(), "blocklist down") {
		t.Fatalf("want the network error of 'down', got %v", err)
	}
	got := active(a.f, OriginLists)
	if got["4.4.4.4"] == nil || got["4.4.4.5"] != nil {
		t.Fatalf("lists before the failure are stored, those after are not: %v", got)
	}
	if startup {
		t.Fatal("startup must be cleared after a successful stream call")
	}
}

func TestAllowlistLinks(t *testing.T) {
	fake := newFake(t)
	s, a, cl := newUnstarted(t, fake, testConfig(fake))
	// an existing decision that the allowlist will cover
	pushAlerts(t, a, "", agentAlert(1, "h", "1", "crowdsec")) // 192.0.2.2
	exp := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	fake.SetAllowlist("al-1", []capitest.AllowlistItem{{Value: "192.0.2.0/24", Description: "office"},
		{Value: "1.2.3.4", Description: "partner", Expiration: &exp}})
	fake.SetBlocklist("bl", []string{"192.0.2.77", "8.8.8.8"})
	fake.SetStream(capitest.StreamResponse{
		New: []capitest.NewGroup{{Scenario: "s", Scope: "Ip", Decisions: []capitest.Decision{
			{Value: "1.2.3.4", Duration: "1h"}, {Value: "1.2.3.5", Duration: "1h"}, {Value: "192.0.2.0/25", Duration: "1h"}}}},
		Links: &capitest.Links{
			Allowlists: []capitest.AllowlistLink{fake.AllowlistLink("al-1", "console-list", "from the console")},
			Blocklists: []capitest.BlocklistLink{fake.BlocklistLink("bl", "ban", "Ip", "24h")}}})
	startup := true
	res := pull(t, s, cl, &startup, false)
	if res.Allowlists != 1 || res.New != 1 || res.Filtered != 2 || res.Blocklists["bl"] != 1 {
		t.Fatalf("pull %+v", res)
	}
	al := a.f.Allowlist("console-list")
	if al == nil || !al.ConsoleManaged || al.AllowlistID != "al-1" || len(al.Items) != 2 || al.Description != "from the console" {
		t.Fatalf("allowlist %+v", al)
	}
	if al.Items[1].Expiration != exp.UnixNano() || al.Items[0].Comment != "office" {
		t.Fatalf("items %+v", al.Items)
	}
	if n := len(a.f.Decisions(&fsm.DecisionFilter{Value: "192.0.2.2"}, time.Now())); n != 0 {
		t.Fatal("existing decision covered by the allowlist still active")
	}
	if got := active(a.f, OriginCAPI); len(got) != 1 || got["1.2.3.5"] == nil {
		t.Fatalf("community decisions %v", got)
	}
	if got := active(a.f, OriginLists); len(got) != 1 || got["8.8.8.8"] == nil {
		t.Fatalf("list decisions %v", got)
	}
	if r := fake.Requests(capitest.Allowlist)[0]; r.Header.Get("Authorization") != "" {
		t.Fatal("allowlist download must carry no auth")
	}
	// replaced on the next pull, and renamed
	fake.SetAllowlist("al-1", []capitest.AllowlistItem{{Value: "9.9.9.9"}})
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{
		Allowlists: []capitest.AllowlistLink{fake.AllowlistLink("al-1", "renamed", "")}}})
	pull(t, s, cl, &startup, false)
	if a.f.Allowlist("console-list") != nil {
		t.Fatal("old name kept")
	}
	if al := a.f.Allowlist("renamed"); al == nil || len(al.Items) != 1 || al.Items[0].Value != "9.9.9.9" {
		t.Fatalf("replaced allowlist %+v", al)
	}
}

func TestPullChunks(t *testing.T) {
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.ChunkSize = 7
	s, a, cl := newUnstarted(t, fake, cfg)
	var ds []capitest.Decision
	var lines []string
	for i := 0; i < 20; i++ {
		ds = append(ds, capitest.Decision{Value: fmt.Sprintf("100.0.0.%d", i), Duration: "1h"})
		lines = append(lines, fmt.Sprintf("100.1.0.%d", i))
	}
	fake.SetBlocklist("big", lines)
	fake.SetStream(capitest.StreamResponse{New: []capitest.NewGroup{{Scenario: "s", Scope: "Ip", Decisions: ds}},
		Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{fake.BlocklistLink("big", "ban", "Ip", "24h")}}})
	startup := true
	pull(t, s, cl, &startup, false)
	// chunks after the first are applied several at a time: any order
	n, sizes := a.commands(fsm.CmdImportDecisions)
	slices.Sort(sizes)
	if n != 6 || fmt.Sprint(sizes) != "[6 6 7 7 7 7]" {
		t.Fatalf("%d import commands, sizes %v", n, sizes)
	}
	// each pull is one alert
	alerts := map[int64]bool{}
	for _, d := range a.f.Decisions(&fsm.DecisionFilter{}, time.Now()) {
		alerts[d.AlertID] = true
	}
	if len(alerts) != 2 {
		t.Fatalf("decisions spread over %d alerts", len(alerts))
	}
	if got := len(active(a.f, OriginCAPI)) + len(active(a.f, OriginLists)); got != 40 {
		t.Fatalf("%d decisions", got)
	}
}

// An import chunk whose apply committed but whose answer timed out is sent
// again under the same request ID: it is applied once, no decision is
// stored twice, and the pull completes.
func TestPullChunkRetriedAfterTimeoutAppliedOnce(t *testing.T) {
	checkChunkRetriedOnce(t, false, fsm.CmdImportDecisions)
}

// checkChunkRetriedOnce pulls a 23-value list in chunks of 5 whose first 3
// answers time out, as ImportList entries (lists) or ImportDecisions, and
// checks each chunk is resent once and every value stored once.
func checkChunkRetriedOnce(t *testing.T, lists bool, cmd fsm.CmdType) {
	t.Helper()
	fake := newFake(t)
	cfg := testConfig(fake)
	cfg.ChunkSize, cfg.ListChunkSize = 5, 5
	s, a, cl := newUnstarted(t, fake, cfg)
	a.lists.Store(lists)
	var lines []string
	for i := 0; i < 23; i++ {
		lines = append(lines, fmt.Sprintf("100.2.0.%d", i))
	}
	fake.SetBlocklist("late", lines)
	fake.SetStream(capitest.StreamResponse{Links: &capitest.Links{Blocklists: []capitest.BlocklistLink{
		fake.BlocklistLink("late", "ban", "Ip", "24h")}}})
	a.lateAnswers.Store(3)
	startup := true
	pull(t, s, cl, &startup, false)
	if n, _ := a.commands(cmd); n != 5+3 {
		t.Errorf("%d %v entries, want 5 chunks + 3 resent", n, cmd)
	}
	got := a.f.Decisions(&fsm.DecisionFilter{Origins: []string{OriginLists}}, time.Now())
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.Value] {
			t.Errorf("%s stored twice", d.Value)
		}
		seen[d.Value] = true
	}
	if len(got) != len(lines) {
		t.Errorf("%d decisions stored, want %d", len(got), len(lines))
	}
}
