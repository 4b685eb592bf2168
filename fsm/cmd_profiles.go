package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
)

// Cluster-wide profiles: the profiles.yaml every node's LAPI evaluates and
// the notification plugin configs (notifications/*.yaml) the leader's
// dispatcher reads, set with `halapi profiles apply` and replicated like any
// other state. The FSM stores bytes only: the node that proposes them parses
// the YAML first (lapi/profiles.Parse; fsm must not import lapi), and every
// node compiles what it reads from here.

// CmdProfilesSet replaces the replicated profiles and notification configs.
// Numbered apart from the iota block (like the usage commands) so that
// types other branches append cannot collide; feature-gated.
const CmdProfilesSet CmdType = 57

// Bounds of a profiles set (Validate).
const (
	// MaxProfilesYAML bounds the profiles.yaml bytes.
	MaxProfilesYAML = 1 << 20
	// MaxNotificationFiles bounds the number of notification config files.
	MaxNotificationFiles = 64
	// MaxNotificationFile bounds one notification config file.
	MaxNotificationFile = 256 << 10
	// MaxNotificationBytes bounds all notification config files together
	// (keeps the raft entry a few MiB at most).
	MaxNotificationBytes = 4 << 20
	// MaxNotificationName bounds a notification file name.
	MaxNotificationName = 128
)

// ProfilesSet is the body of CmdProfilesSet: the whole set, replacing the
// previous one (never a patch, so every node holds exactly what was sent).
type ProfilesSet struct {
	// YAML is the profiles file (multi-document, evaluation order).
	YAML []byte `json:"yaml"`
	// Notifications maps a file name (no directory) to its content.
	Notifications map[string][]byte `json:"notifications,omitempty"`
	// SetBy names who applied it (operator and node, for `profiles show`).
	SetBy string `json:"set_by,omitempty"`
}

// ProfileSet is the replicated profiles as stored: immutable once
// published (a new apply replaces the pointer).
type ProfileSet struct {
	YAML          []byte            `json:"yaml"`
	Notifications map[string][]byte `json:"notifications,omitempty"`
	SetBy         string            `json:"set_by,omitempty"`
	// SetAt is the leader's time of the apply (unix ns), Index its raft
	// index.
	SetAt int64  `json:"set_at"`
	Index uint64 `json:"index"`
	// Hash is ProfilesHash of YAML and Notifications.
	Hash string `json:"hash"`
}

// ProfilesHash is the identity of a profiles set: SHA-256 over the YAML
// and the notification files in name order, each length-prefixed, hex
// (the first 16 bytes). A node evaluating a local file computes the same
// hash over its file, so `cluster status` compares both kinds.
func ProfilesHash(yaml []byte, notifications map[string][]byte) string {
	h := sha256.New()
	var n [8]byte
	put := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	put(yaml)
	names := make([]string, 0, len(notifications))
	for k := range notifications {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		put([]byte(k))
		put(notifications[k])
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// ValidNotificationName reports whether name is acceptable as a
// notification config file name: 1–128 bytes of [A-Za-z0-9._-], not
// starting with a dot (no directory, no hidden file, no "..").
func ValidNotificationName(name string) bool {
	if name == "" || len(name) > MaxNotificationName || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func (b ProfilesSet) Validate() error {
	var k checker
	switch {
	case len(b.YAML) == 0:
		k.fail("yaml", "is required")
	case len(b.YAML) > MaxProfilesYAML:
		k.fail("yaml", "larger than %d bytes", MaxProfilesYAML)
	}
	k.count("notifications", len(b.Notifications), MaxNotificationFiles)
	total := 0
	names := make([]string, 0, len(b.Notifications))
	for name := range b.Notifications {
		names = append(names, name)
	}
	sort.Strings(names) // the same first error on every run
	for _, name := range names {
		v := b.Notifications[name]
		if !ValidNotificationName(name) {
			k.fail("notifications", "file name %q: want 1-%d characters of A-Z a-z 0-9 . _ -, not starting with a dot", truncate(name, 64), MaxNotificationName)
		}
		if len(v) > MaxNotificationFile {
			k.fail("notifications", "%s: larger than %d bytes", name, MaxNotificationFile)
		}
		total += len(v)
	}
	if total > MaxNotificationBytes {
		k.fail("notifications", "larger than %d bytes in total", MaxNotificationBytes)
	}
	k.name("set_by", b.SetBy, false)
	return k.err
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// profilesSet stores a new set (apply). The body's byte slices are owned
// by the decoded command; they are copied so that the stored set shares
// nothing with it.
func (s *state) profilesSet(e entryCtx, b *ProfilesSet) *Result {
	p := &ProfileSet{YAML: append([]byte(nil), b.YAML...), SetBy: b.SetBy, SetAt: e.now, Index: e.index}
	if len(b.Notifications) > 0 {
		p.Notifications = make(map[string][]byte, len(b.Notifications))
		for k, v := range b.Notifications {
			p.Notifications[k] = append([]byte{}, v...)
		}
	}
	p.Hash = ProfilesHash(p.YAML, p.Notifications)
	s.profiles = p
	return &Result{N: 1}
}

// profilesWatch is the change signal of the replicated profiles: ch is
// closed (and replaced) whenever a published state holds another set than
// the previous publish.
type profilesWatch struct {
	mu   sync.Mutex
	ch   chan struct{}
	last *ProfileSet
}

// ProfilesChanged returns a channel closed at the next change of the
// replicated profiles (an apply of CmdProfilesSet, or a snapshot restore
// that brings another set). Take the channel first, then read Profiles,
// then wait: no change is missed.
func (f *FSM) ProfilesChanged() <-chan struct{} {
	w := &f.profWatch
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

// profilesPublished signals a change of the published profiles (called
// with the state just published).
func (f *FSM) profilesPublished(p *ProfileSet) {
	w := &f.profWatch
	w.mu.Lock()
	if p != w.last {
		w.last = p
		if w.ch != nil {
			close(w.ch)
			w.ch = nil
		}
	}
	w.mu.Unlock()
}

// restoreProfiles takes the profiles record of a snapshot: bounded like
// a command, and its hash recomputed (a snapshot comes from a peer).
func (s *state) restoreProfiles(p *ProfileSet) error {
	if err := (ProfilesSet{YAML: p.YAML, Notifications: p.Notifications, SetBy: p.SetBy}).Validate(); err != nil {
		return fmt.Errorf("restore: profiles: %w", err)
	}
	p.Hash = ProfilesHash(p.YAML, p.Notifications)
	s.profiles = p
	return nil
}
