package lapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

const captchaProfiles = "name: captcha_all\nfilters:\n - Alert.Remediation == true\ndecisions:\n - type: captcha\n   duration: 17h\non_success: break\n"

// pushDecision pushes an agent alert for ip and returns the type and
// duration of the decision it got ("" without one).
func (e *env) pushDecision(tok, ip string) (typ, dur string) {
	e.t.Helper()
	e.expect(e.do("POST", "/v1/alerts", []any{agentAlert(ip, e.now())}, withToken(tok)), 201)
	r := e.expect(e.do("GET", "/v1/alerts?ip="+ip, nil, withToken(tok)), 200)
	var out []struct {
		Decisions []struct{ Type, Duration string }
	}
	r.json(e.t, &out)
	if len(out) == 0 || len(out[0].Decisions) == 0 {
		return "", ""
	}
	return out[0].Decisions[0].Type, out[0].Decisions[0].Duration
}

func (e *env) admin(method, path string, body any) resp {
	e.t.Helper()
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			e.t.Fatal(err)
		}
	}
	r := httptest.NewRequest(method, "/admin/v1"+path, bytes.NewReader(b))
	w := httptest.NewRecorder()
	adminAPI(e.srv).ServeHTTP(w, r)
	return resp{code: w.Code, body: w.Body.String()}
}

func TestProfilesReplicatedWinAndSwapAtOnce(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m1")
	if typ, dur := e.pushDecision(tok, "192.0.2.1"); typ != "ban" || dur != "4h0m0s" {
		t.Fatalf("default profiles: %s %s", typ, dur)
	}
	a := e.srv.Profiles()
	if a.Source != ProfilesDefault || a.Hash != fsm.ProfilesHash(a.YAML, nil) {
		t.Fatalf("before any apply: %+v", a)
	}
	ch := e.srv.ProfilesChanged()

	// bad YAML: refused with one line, nothing changed
	r := e.admin("PUT", "/profiles", ProfilesApplyRequest{YAML: []byte("name: x\nbogus: 1\n")})
	if r.code != 400 || !strings.Contains(r.body, `unknown key \"bogus\"`) || strings.Contains(r.body, "\\n") {
		t.Fatalf("bad yaml: %d %s", r.code, r.body)
	}
	r = e.admin("PUT", "/profiles", ProfilesApplyRequest{YAML: []byte(captchaProfiles), Notifications: map[string][]byte{"../x.yaml": nil}})
	if r.code != 400 || !strings.Contains(r.body, "file name") {
		t.Fatalf("bad notification name: %d %s", r.code, r.body)
	}
	r = e.admin("PUT", "/profiles", ProfilesApplyRequest{YAML: []byte(captchaProfiles), Notifications: map[string][]byte{"a.yaml": []byte("type: http"), "b.yaml": []byte("type: [\n")}})
	if r.code != 400 || !strings.Contains(r.body, "notification config b.yaml is not YAML") || strings.Contains(r.body, "\\n") {
		t.Fatalf("notification config that is not YAML: %d %s", r.code, r.body)
	}
	if e.fsm.Profiles() != nil {
		t.Fatal("a refused set was stored")
	}

	notif := map[string][]byte{"http.yaml": []byte("type: http\nname: http_default\n")}
	r = e.admin("PUT", "/profiles", ProfilesApplyRequest{YAML: []byte(captchaProfiles), Notifications: notif, SetBy: "root@test"})
	if r.code != 200 {
		t.Fatalf("apply: %d %s", r.code, r.body)
	}
	var v ProfilesView
	r.json(t, &v)
	wantHash := fsm.ProfilesHash([]byte(captchaProfiles), notif)
	if v.Replicated == nil || v.Replicated.Hash != wantHash || v.InUse.Source != ProfilesReplicated || v.InUse.Hash != wantHash ||
		len(v.InUse.Profiles) != 1 || v.InUse.Profiles[0] != "captcha_all" || v.Replicated.SetBy != "root@test" ||
		strings.Join(v.Replicated.Files, ",") != "http.yaml" {
		t.Fatalf("view after apply: %s", r.body)
	}
	select {
	case <-ch:
	default:
		t.Fatal("ProfilesChanged did not fire")
	}
	if typ, dur := e.pushDecision(tok, "192.0.2.2"); typ != "captcha" || dur != "17h0m0s" {
		t.Fatalf("replicated profiles: %s %s", typ, dur)
	}
	if got := e.srv.Profiles().Notifications["http.yaml"]; !bytes.Equal(got, notif["http.yaml"]) {
		t.Fatalf("notifications in use: %q", got)
	}

	// a local file reloaded afterwards does not win over the replicated set
	dir := t.TempDir()
	path := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(captchaProfiles, "17h", "5h")), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.ReloadLocalProfiles(path, ""); err != nil {
		t.Fatal(err)
	}
	a = e.srv.Profiles()
	if a.Source != ProfilesReplicated || !a.LocalDiffers || a.LocalHash == a.Hash {
		t.Fatalf("local file after apply: %+v", a)
	}
	if typ, dur := e.pushDecision(tok, "192.0.2.3"); typ != "captcha" || dur != "17h0m0s" {
		t.Fatalf("local file won: %s %s", typ, dur)
	}
}

// An apply committed through raft (here straight into the FSM, as on a
// follower) is in force for the very next alert: no wait for the watcher.
func TestProfilesFollowerApplyInForceAtOnce(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m1")
	old := e.srv.Profiles()
	if _, err := e.srv.cluster.Apply(t.Context(), fsm.Command{Type: fsm.CmdProfilesSet, Body: fsm.ProfilesSet{YAML: []byte(captchaProfiles)}}); err != nil {
		t.Fatal(err)
	}
	if typ, _ := e.pushDecision(tok, "192.0.2.9"); typ != "captcha" {
		t.Fatalf("got %q right after the apply", typ)
	}
	if e.srv.Profiles() == old {
		t.Fatal("set in use not swapped")
	}
}

func TestProfilesLocalReloadAndWarning(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	e := newEnv(t)
	e.srv.log = slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))
	tok := e.machine("m1")
	dir := t.TempDir()
	path := filepath.Join(dir, "profiles.yaml")
	ndir := filepath.Join(dir, "notifications")
	if err := os.Mkdir(ndir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ndir, "http.yaml"), []byte("type: http"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ndir, "README"), []byte("ignored"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(captchaProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.ReloadLocalProfiles(path, ndir); err != nil {
		t.Fatal(err)
	}
	a := e.srv.Profiles()
	if a.Source != ProfilesFile || len(a.Notifications) != 1 || a.Hash != fsm.ProfilesHash([]byte(captchaProfiles), map[string][]byte{"http.yaml": []byte("type: http")}) {
		t.Fatalf("file: %+v", a)
	}
	if typ, _ := e.pushDecision(tok, "192.0.2.1"); typ != "captcha" {
		t.Fatalf("file profiles not used: %s", typ)
	}
	// a broken file on reload changes nothing
	if err := os.WriteFile(path, []byte("filters: [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.ReloadLocalProfiles(path, ndir); err == nil {
		t.Fatal("broken file reloaded")
	}
	if e.srv.Profiles() != a {
		t.Fatal("a failed reload changed the set in use")
	}
	// the replicated set (same profiles, other notifications) wins, with one warning
	if _, err := e.srv.cluster.Apply(t.Context(), fsm.Command{Type: fsm.CmdProfilesSet, Body: fsm.ProfilesSet{YAML: []byte(captchaProfiles)}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		e.srv.Profiles()
		e.srv.SetLocalProfiles(e.srv.prof.local)
	}
	mu.Lock()
	n := strings.Count(logs.String(), "differs from the cluster's replicated profiles")
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
	}
	// a reload with a matching local set: no longer differs
	if err := os.Remove(filepath.Join(ndir, "http.yaml")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(captchaProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.ReloadLocalProfiles(path, ndir); err != nil {
		t.Fatal(err)
	}
	if a := e.srv.Profiles(); a.LocalDiffers || a.Hash != a.LocalHash || a.Source != ProfilesReplicated {
		t.Fatalf("matching local set: %+v", a)
	}
}

// The replicated set that does not compile on this node (another version
// validated it) leaves the set in use alone and says so.
func TestProfilesReplicatedSetThatDoesNotLoad(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m1")
	before := e.srv.Profiles()
	if _, err := e.srv.cluster.Apply(t.Context(), fsm.Command{Type: fsm.CmdProfilesSet, Body: fsm.ProfilesSet{YAML: []byte("name: x\nfilters:\n - NoSuchHelper()\n")}}); err != nil {
		t.Fatal(err)
	}
	a := e.srv.Profiles()
	if a.Error == "" || a.Hash != before.Hash || a.Source != ProfilesDefault || a.Engine != before.Engine {
		t.Fatalf("in use: %+v", a)
	}
	if e.srv.Profiles() != a {
		t.Fatal("rebuilt on every call")
	}
	if typ, _ := e.pushDecision(tok, "192.0.2.1"); typ != "ban" {
		t.Fatalf("got %q", typ)
	}
	// its own file still reloads (SIGHUP) while the replicated set cannot load
	path := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(path, []byte(captchaProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.ReloadLocalProfiles(path, ""); err != nil {
		t.Fatal(err)
	}
	if a := e.srv.Profiles(); a.Source != ProfilesFile || a.Error == "" {
		t.Fatalf("after a reload: %+v", a)
	}
	if typ, _ := e.pushDecision(tok, "192.0.2.2"); typ != "captcha" {
		t.Fatalf("got %q after a reload", typ)
	}
}

func TestReadNotificationsDirBounds(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte("a"), n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ok.yaml", 10)
	write("big.yml", fsm.MaxNotificationFile+1)
	if _, err := ReadNotificationsDir(dir); err == nil || !strings.Contains(err.Error(), "big.yml: larger than") {
		t.Fatalf("big file: %v", err)
	}
	os.Remove(filepath.Join(dir, "big.yml"))
	write("with space.yaml", 1)
	if _, err := ReadNotificationsDir(dir); err == nil || !strings.Contains(err.Error(), "file names") {
		t.Fatalf("bad name: %v", err)
	}
	os.Remove(filepath.Join(dir, "with space.yaml"))
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := ReadNotificationsDir(dir)
	if err != nil || len(m) != 1 || len(m["ok.yaml"]) != 10 {
		t.Fatalf("%v %v", m, err)
	}
	if _, err := ReadNotificationsDir(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing dir accepted")
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Without any request, the watcher swaps the set in use when the
// replicated one changes, and ProfilesChanged fires (what notify waits
// on); concurrent pushes and applies are race-free.
func TestProfilesWatcherSwapsWithoutTraffic(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("m1")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	e.srv.Run(ctx)
	ch := e.srv.ProfilesChanged()
	if _, err := e.srv.cluster.Apply(ctx, fsm.Command{Type: fsm.CmdProfilesSet, Body: fsm.ProfilesSet{YAML: []byte(captchaProfiles)}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("ProfilesChanged did not fire without traffic")
	}
	if a := e.srv.prof.active.Load(); a.Source != ProfilesReplicated {
		t.Fatalf("watcher did not swap: %+v", a)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 20; i++ {
			dur := fmt.Sprintf("%dh", i+1)
			if _, err := e.srv.cluster.Apply(ctx, fsm.Command{Type: fsm.CmdProfilesSet, Body: fsm.ProfilesSet{YAML: []byte(strings.ReplaceAll(captchaProfiles, "17h", dur))}}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i := 0; i < 20; i++ {
		if typ, _ := e.pushDecision(tok, fmt.Sprintf("192.0.2.%d", i+1)); typ != "captcha" {
			t.Fatalf("push %d: %q", i, typ)
		}
	}
	wg.Wait()
	if a := e.srv.Profiles(); a.Hash != e.fsm.Profiles().Hash {
		t.Fatalf("in use %s, replicated %s", a.Hash, e.fsm.Profiles().Hash)
	}
}

// A notification dir that does not exist (CrowdSec's config names one
// whether or not a plugin is used) holds no config; a file in its place is
// an error.
func TestLoadLocalProfilesMissingNotificationDir(t *testing.T) {
	dir := t.TempDir()
	l, err := LoadLocalProfiles("", filepath.Join(dir, "absent"))
	if err != nil || len(l.Notifications) != 0 || l.Explicit {
		t.Fatalf("missing dir: %+v, %v", l, err)
	}
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadLocalProfiles("", f); err == nil {
		t.Fatal("a file as notification dir was accepted")
	}
}
