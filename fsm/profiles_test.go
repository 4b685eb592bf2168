package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const testProfilesYAML = "name: long_ban\nfilters:\n - Alert.Remediation == true\ndecisions:\n - type: ban\n   duration: 17h\non_success: break\n"

func TestProfilesSetValidateBounds(t *testing.T) {
	big := func(n int) []byte { return bytes.Repeat([]byte("a"), n) }
	files := func(n, size int) map[string][]byte {
		m := map[string][]byte{}
		for i := 0; i < n; i++ {
			m[fmt.Sprintf("n%d.yaml", i)] = big(size)
		}
		return m
	}
	ok := []ProfilesSet{
		{YAML: []byte(testProfilesYAML)},
		{YAML: big(MaxProfilesYAML), SetBy: "root@n1"},
		{YAML: []byte("x"), Notifications: files(MaxNotificationFiles, 1024)},
		{YAML: []byte("x"), Notifications: map[string][]byte{"http.yaml": big(MaxNotificationFile), "a_b-C.9.yml": nil}},
		{YAML: []byte("x"), Notifications: files(16, MaxNotificationFile)}, // exactly 4 MiB
	}
	for i, b := range ok {
		if err := b.Validate(); err != nil {
			t.Errorf("ok[%d]: %v", i, err)
		}
	}
	bad := []struct {
		b    ProfilesSet
		want string
	}{
		{ProfilesSet{}, "yaml: is required"},
		{ProfilesSet{YAML: big(MaxProfilesYAML + 1)}, "yaml: larger than"},
		{ProfilesSet{YAML: []byte("x"), Notifications: files(MaxNotificationFiles+1, 1)}, "has 65 entries"},
		{ProfilesSet{YAML: []byte("x"), Notifications: map[string][]byte{"h.yaml": big(MaxNotificationFile + 1)}}, "h.yaml: larger than"},
		{ProfilesSet{YAML: []byte("x"), Notifications: files(17, MaxNotificationFile)}, "in total"},
		{ProfilesSet{YAML: []byte("x"), SetBy: "a\x00b"}, "set_by: contains a control character"},
		{ProfilesSet{YAML: []byte("x"), SetBy: strings.Repeat("s", MaxName+1)}, "set_by: longer than"},
	}
	for _, name := range []string{"", "../etc/passwd", "a/b.yaml", ".hidden", "..", ".", "sp ace.yaml", "é.yaml",
		"nul\x00.yaml", "back\\slash", strings.Repeat("n", MaxNotificationName+1)} {
		bad = append(bad, struct {
			b    ProfilesSet
			want string
		}{ProfilesSet{YAML: []byte("x"), Notifications: map[string][]byte{name: []byte("type: http")}}, "file name"})
	}
	for i, c := range bad {
		err := c.b.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bad[%d]: got %v, want an error containing %q", i, err, c.want)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("bad[%d]: %v is not ErrInvalid", i, err)
		}
		// the leader's check of a forwarded entry refuses it too
		data, encErr := Command{Type: CmdProfilesSet, Body: c.b}.Encode()
		if encErr != nil {
			t.Fatal(encErr)
		}
		if _, err := DecodeValid(data); err == nil {
			t.Errorf("bad[%d]: DecodeValid accepted it", i)
		}
	}
	// a long name is shown shortened in the message
	err := ProfilesSet{YAML: []byte("x"), Notifications: map[string][]byte{strings.Repeat("x", 5000): nil}}.Validate()
	if err == nil || len(err.Error()) > 300 {
		t.Fatalf("long name message: %v", err)
	}
}

func TestProfilesApplyAndWatch(t *testing.T) {
	h := newHarness(t)
	if h.f.Profiles() != nil {
		t.Fatal("fresh FSM has profiles")
	}
	ch := h.f.ProfilesChanged()
	// an unrelated apply is no change
	h.must(CmdSetJWTKey, 5, SetJWTKey{Key: []byte("k")})
	select {
	case <-ch:
		t.Fatal("ProfilesChanged closed by an unrelated apply")
	default:
	}
	notif := map[string][]byte{"http.yaml": []byte("type: http\nname: http_default\n")}
	body := ProfilesSet{YAML: []byte(testProfilesYAML), Notifications: notif, SetBy: "root@n2"}
	h.must(CmdProfilesSet, 1000, body)
	select {
	case <-ch:
	default:
		t.Fatal("ProfilesChanged not closed by a profiles apply")
	}
	p := h.f.Profiles()
	if p == nil || string(p.YAML) != testProfilesYAML || string(p.Notifications["http.yaml"]) != string(notif["http.yaml"]) ||
		p.SetBy != "root@n2" || p.SetAt != 1000 || p.Index != h.idx || p.Hash != ProfilesHash(body.YAML, notif) {
		t.Fatalf("stored set: %+v", p)
	}
	// the stored bytes are not the caller's
	notif["http.yaml"][0] = 'X'
	if p.Notifications["http.yaml"][0] == 'X' {
		t.Fatal("stored notification shares the command's bytes")
	}
	ch2 := h.f.ProfilesChanged()
	select {
	case <-ch2:
		t.Fatal("new channel already closed")
	default:
	}
	// a replacement drops the old notifications (never a patch)
	h.must(CmdProfilesSet, 2000, ProfilesSet{YAML: []byte("name: other\n")})
	<-ch2
	if q := h.f.Profiles(); q.Notifications != nil || string(q.YAML) != "name: other\n" || q.Hash == p.Hash {
		t.Fatalf("replacement: %+v", q)
	}
	if string(p.YAML) != testProfilesYAML {
		t.Fatal("the earlier set changed")
	}
}

func TestProfilesHash(t *testing.T) {
	y := []byte("name: a\n")
	a := ProfilesHash(y, map[string][]byte{"a.yaml": []byte("1"), "b.yaml": []byte("2")})
	for i := 0; i < 20; i++ { // map order does not matter
		if b := ProfilesHash(y, map[string][]byte{"b.yaml": []byte("2"), "a.yaml": []byte("1")}); b != a {
			t.Fatalf("hash depends on map order: %s %s", a, b)
		}
	}
	distinct := map[string]string{
		"base":        a,
		"no files":    ProfilesHash(y, nil),
		"moved bytes": ProfilesHash(y, map[string][]byte{"a.yaml": []byte("12"), "b.yaml": nil}),
		"renamed":     ProfilesHash(y, map[string][]byte{"a.yaml": []byte("1"), "c.yaml": []byte("2")}),
		"yaml":        ProfilesHash([]byte("name: b\n"), map[string][]byte{"a.yaml": []byte("1"), "b.yaml": []byte("2")}),
		"name/body":   ProfilesHash(y, map[string][]byte{"a.yaml1": nil, "b.yaml": []byte("2")}),
	}
	seen := map[string]string{}
	for k, v := range distinct {
		if o, dup := seen[v]; dup {
			t.Fatalf("%s and %s hash alike", k, o)
		}
		seen[v] = k
	}
	if ProfilesHash(nil, nil) != ProfilesHash([]byte{}, map[string][]byte{}) {
		t.Fatal("nil and empty differ")
	}
}

func TestProfilesSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	h.must(CmdSetJWTKey, 5, SetJWTKey{Key: []byte("k")})
	// without profiles: none after a restore
	if g := roundTrip(t, h.f); g.Profiles() != nil {
		t.Fatal("profiles appeared in a restore")
	}
	notif := map[string][]byte{"http.yaml": []byte("type: http"), "slack.yaml": []byte("type: slack")}
	h.must(CmdProfilesSet, 3000, ProfilesSet{YAML: []byte(testProfilesYAML), Notifications: notif, SetBy: "root@n1"})
	want := h.f.Profiles()
	g := New(quietLogger())
	ch := g.ProfilesChanged()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	data := persist(t, snap)
	if err := g.Restore(&closeTracker{Reader: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	default:
		t.Fatal("a restore bringing profiles did not signal a change")
	}
	got := g.Profiles()
	if got == nil || !bytes.Equal(got.YAML, want.YAML) || len(got.Notifications) != 2 ||
		!bytes.Equal(got.Notifications["slack.yaml"], notif["slack.yaml"]) || got.SetBy != want.SetBy ||
		got.SetAt != want.SetAt || got.Index != want.Index || got.Hash != want.Hash {
		t.Fatalf("restored %+v, want %+v", got, want)
	}

	// a hostile snapshot: the hash is recomputed, bounds are enforced
	tampered := bytes.Replace(data, []byte(want.Hash), []byte(strings.Repeat("0", len(want.Hash))), 1)
	if bytes.Equal(tampered, data) {
		t.Fatal("hash not found in the snapshot")
	}
	if r := restored(t, tampered); r.Profiles().Hash != want.Hash {
		t.Fatalf("tampered hash kept: %s", r.Profiles().Hash)
	}
	bad := bytes.Replace(data, []byte(`"slack.yaml"`), []byte(`"../slack.yaml"`), 1)
	if err := New(quietLogger()).Restore(&closeTracker{Reader: bytes.NewReader(bad)}); err == nil || !strings.Contains(err.Error(), "profiles") {
		t.Fatalf("restore of a bad notification name: %v", err)
	}
}

// Apply is total: a set that Validate refuses (committed by a hypothetical
// older leader) is stored as is, and a body that does not decode is
// skipped like any malformed entry.
func TestProfilesHostileEntries(t *testing.T) {
	h := newHarness(t)
	res := h.raw(append(entry(t, CmdProfilesSet, 1, ProfilesSet{YAML: []byte("x")})[:10], `{"yaml":5}`...))
	if r, _ := res.(*Result); r == nil || r.Code != CodeInvalid {
		t.Fatalf("undecodable body: %v", res)
	}
	if h.f.Profiles() != nil {
		t.Fatal("an undecodable entry stored profiles")
	}
	for _, body := range []string{`{"yaml":"eA==","notifications":{"../x":"eA=="}}`, `{"yaml":null,"notifications":null}`, `{}`} {
		data := append(entry(t, CmdProfilesSet, 1, ProfilesSet{YAML: []byte("x")})[:10], body...)
		if _, err := DecodeValid(data); err == nil {
			t.Fatalf("DecodeValid accepted %s", body)
		}
		if r, _ := h.raw(data).(*Result); r == nil || r.Err() != nil {
			t.Fatalf("apply of %s: %v", body, r)
		}
	}
}

func TestProfilesSetIsGated(t *testing.T) {
	if Baseline(CmdProfilesSet) || !Supported(CmdProfilesSet) || CmdProfilesSet&IgnorableFlag != 0 {
		t.Fatal("CmdProfilesSet must be a supported, non-baseline, non-ignorable type")
	}
	found := false
	for _, x := range Extensions() {
		found = found || CmdType(x) == CmdProfilesSet
	}
	if !found {
		t.Fatal("CmdProfilesSet is not advertised")
	}
}
