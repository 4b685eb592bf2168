package lapi

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/profiles"
)

// Cluster-wide profiles. A node evaluates one profiles set at a time:
//
//   - the replicated set (fsm.Profiles, set with `halapi profiles apply`)
//     as soon as one was ever applied: it wins over the node's own file;
//   - before that, the node's own --profiles file (with its .local overlay)
//     or the built-in default, and its --notification-dir.
//
// The set in use (ActiveProfiles) is swapped atomically: an alert push
// takes one set for the whole request. Every node compiles the replicated
// YAML itself, the moment it applies it: Profiles() compares the published
// fsm set with the one in use on each call, so an alert evaluated after the
// apply never sees the old set; a goroutine (Run) also swaps on the fsm's
// change signal, for the notification side and the logs.

// Sources of the profiles a node evaluates.
const (
	ProfilesReplicated = "replicated"
	ProfilesFile       = "file"
	ProfilesDefault    = "default"
)

// LocalProfiles is a node's own profiles: its --profiles file (or the
// built-in default) and its notification config dir.
type LocalProfiles struct {
	YAML          []byte
	Notifications map[string][]byte
	Source        string // ProfilesFile or ProfilesDefault
	Hash          string
	// Explicit: the operator gave a file or a notification dir (a node
	// that only runs the built-in default has nothing to disagree with).
	Explicit bool
	profs    []*profiles.Profile
}

// LoadLocalProfiles reads a node's own profiles: path (with its .local
// overlay; "" = the built-in default) and the notification configs of dir
// ("" = none). Any error leaves nothing half-loaded.
func LoadLocalProfiles(path, dir string) (*LocalProfiles, error) {
	l := &LocalProfiles{Source: ProfilesDefault}
	var err error
	if path != "" {
		if l.YAML, l.profs, err = profiles.ReadFiles(path); err != nil {
			return nil, err
		}
		l.Source, l.Explicit = ProfilesFile, true
	} else {
		l.YAML = profiles.DefaultYAML()
		if l.profs, err = profiles.Parse(l.YAML); err != nil {
			return nil, err
		}
	}
	if len(l.YAML) > fsm.MaxProfilesYAML {
		return nil, fmt.Errorf("profiles file larger than %d bytes", fsm.MaxProfilesYAML)
	}
	// A notification dir that does not exist holds no config (CrowdSec's
	// config.yaml names /etc/crowdsec/notifications/ whether or not a
	// plugin is used; a profile naming a missing config is refused later,
	// with the names).
	if _, serr := os.Stat(dir); dir != "" && !errors.Is(serr, fs.ErrNotExist) {
		if l.Notifications, err = ReadNotificationsDir(dir); err != nil {
			return nil, err
		}
		l.Explicit = true
	}
	l.Hash = fsm.ProfilesHash(l.YAML, l.Notifications)
	return l, nil
}

// ReadNotificationsDir reads the notification plugin configs of dir: every
// regular *.yaml / *.yml file (subdirectories and other files are
// ignored), within the bounds the replicated state keeps (names, count,
// sizes: fsm.ProfilesSet.Validate).
func ReadNotificationsDir(dir string) (map[string][]byte, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("notifications dir: %w", err)
	}
	out := map[string][]byte{}
	total := 0
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".yaml") && !strings.HasSuffix(name, ".yml") {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, name)) // follows symlinks, like CrowdSec
		if err != nil {
			return nil, fmt.Errorf("notifications dir: %w", err)
		}
		if !st.Mode().IsRegular() {
			continue
		}
		if !fsm.ValidNotificationName(name) {
			return nil, fmt.Errorf("notification config %q: file names must be 1-%d characters of A-Z a-z 0-9 . _ - not starting with a dot", name, fsm.MaxNotificationName)
		}
		if len(out) == fsm.MaxNotificationFiles {
			return nil, fmt.Errorf("notifications dir %s: more than %d config files", dir, fsm.MaxNotificationFiles)
		}
		if st.Size() > fsm.MaxNotificationFile {
			return nil, fmt.Errorf("notification config %s: larger than %d bytes", name, fsm.MaxNotificationFile)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("notifications dir: %w", err)
		}
		if len(b) > fsm.MaxNotificationFile {
			return nil, fmt.Errorf("notification config %s: larger than %d bytes", name, fsm.MaxNotificationFile)
		}
		total += len(b)
		if total > fsm.MaxNotificationBytes {
			return nil, fmt.Errorf("notifications dir %s: more than %d bytes in total", dir, fsm.MaxNotificationBytes)
		}
		out[name] = b
	}
	return out, nil
}

// ActiveProfiles is the profiles set a node evaluates. Immutable: a change
// builds a new one.
type ActiveProfiles struct {
	Engine *profiles.Engine
	// YAML and Notifications are the set's bytes (notification config
	// file name -> content: what the notification dispatcher reads).
	YAML          []byte
	Notifications map[string][]byte
	Hash          string
	Source        string // ProfilesReplicated, ProfilesFile or ProfilesDefault
	// Replicated is the fsm set in use (Source replicated), else nil.
	Replicated *fsm.ProfileSet
	// LocalHash is the hash of the node's own file (or default) and
	// notification dir; LocalDiffers says that the replicated set is in
	// use and the operator gave this node a file or dir that differs.
	LocalHash    string
	LocalDiffers bool
	// Error is set when the newest replicated set does not compile on
	// this node (the set before it stays in use).
	Error string

	seen *fsm.ProfileSet // the fsm set this was built for (nil: none)
}

// profileState is the Server's profiles (one per Server).
type profileState struct {
	mu     sync.Mutex // serialises rebuilds; guards local, warned, ch
	local  *LocalProfiles
	warned string
	ch     chan struct{}
	active atomic.Pointer[ActiveProfiles]
}

// Profiles returns the set this node evaluates now. It never returns a set
// older than the replicated set the local FSM has applied.
func (s *Server) Profiles() *ActiveProfiles {
	p := s.fsm.Profiles()
	if a := s.prof.active.Load(); a != nil && a.seen == p {
		return a
	}
	return s.rebuildProfiles(false)
}

// ProfilesChanged returns a channel closed at the next change of the set
// this node evaluates (take it before calling Profiles, then wait).
func (s *Server) ProfilesChanged() <-chan struct{} {
	s.prof.mu.Lock()
	defer s.prof.mu.Unlock()
	if s.prof.ch == nil {
		s.prof.ch = make(chan struct{})
	}
	return s.prof.ch
}

// SetLocalProfiles replaces the node's own profiles (start, SIGHUP). They
// are used at once unless a replicated set exists.
func (s *Server) SetLocalProfiles(l *LocalProfiles) {
	s.prof.mu.Lock()
	s.prof.local = l
	s.prof.mu.Unlock()
	s.rebuildProfiles(true)
}

// ReloadLocalProfiles re-reads the node's own profiles file and
// notification dir (SIGHUP). On error nothing changes.
func (s *Server) ReloadLocalProfiles(path, dir string) error {
	l, err := LoadLocalProfiles(path, dir)
	if err != nil {
		return err
	}
	s.SetLocalProfiles(l)
	a := s.prof.active.Load()
	s.log.Info("profiles reloaded", "source", l.Source, "hash", l.Hash, "in_use", a.Source, "in_use_hash", a.Hash)
	return nil
}

// rebuildProfiles builds the set in use from the published fsm set (when
// there is one) or the node's own, unless the one in use is already that
// (force: the local set changed).
func (s *Server) rebuildProfiles(force bool) *ActiveProfiles {
	st := &s.prof
	st.mu.Lock()
	defer st.mu.Unlock()
	p := s.fsm.Profiles()
	old := st.active.Load()
	if !force && old != nil && old.seen == p {
		return old
	}
	local := st.local
	a := &ActiveProfiles{seen: p, LocalHash: local.Hash}
	switch {
	case p != nil && old != nil && old.Replicated == p:
		// the local set changed; the replicated set in use stays
		a.Engine, a.YAML, a.Notifications, a.Hash, a.Source, a.Replicated = old.Engine, old.YAML, old.Notifications, old.Hash, old.Source, p
	case p != nil:
		profs, err := profiles.Parse(p.YAML)
		if err != nil {
			// Another version of halapi validated it. Keep what is in
			// use; cluster status shows this node's hash apart.
			s.log.Error("the replicated profiles do not load on this node: keeping the profiles in use", "hash", p.Hash, "err", err)
			if old != nil && (old.Replicated != nil || !force) {
				c := *old // the set in use stays (a new local file applies)
				a = &c
			} else {
				a = s.localActive(local, nil)
			}
			a.seen, a.Error, a.LocalHash = p, err.Error(), local.Hash
			break
		}
		e := profiles.NewEngine(profs, s.fsm)
		e.SetLogger(s.log)
		a.Engine, a.YAML, a.Notifications, a.Hash, a.Source, a.Replicated = e, p.YAML, p.Notifications, p.Hash, ProfilesReplicated, p
	default:
		a = s.localActive(local, nil)
	}
	if a.Source == ProfilesReplicated && local.Explicit && local.Hash != a.Hash {
		a.LocalDiffers = true
		if key := local.Hash + "/" + a.Hash; st.warned != key {
			st.warned = key
			s.log.Warn("this node's --profiles file or --notification-dir differs from the cluster's replicated profiles, which are in use (halapi profiles show)",
				"local_hash", local.Hash, "replicated_hash", a.Hash)
		}
	}
	st.active.Store(a)
	if old == nil || old.Engine != a.Engine || old.Hash != a.Hash || old.Source != a.Source {
		if st.ch != nil {
			close(st.ch)
			st.ch = nil
		}
		if old != nil && (old.Hash != a.Hash || old.Source != a.Source) {
			s.log.Info("profiles in use changed", "source", a.Source, "hash", a.Hash)
		}
	}
	return a
}

func (s *Server) localActive(l *LocalProfiles, seen *fsm.ProfileSet) *ActiveProfiles {
	e := profiles.NewEngine(l.profs, s.fsm)
	e.SetLogger(s.log)
	return &ActiveProfiles{Engine: e, YAML: l.YAML, Notifications: l.Notifications, Hash: l.Hash, Source: l.Source,
		LocalHash: l.Hash, seen: seen}
}

// watchProfiles swaps the set in use when the replicated one changes
// (Run), so the change is logged and ProfilesChanged fires even when no
// alert arrives.
func (s *Server) watchProfiles(done <-chan struct{}) {
	for {
		ch := s.fsm.ProfilesChanged()
		s.Profiles()
		select {
		case <-ch:
		case <-done:
			return
		}
	}
}

// initProfiles sets the node's own profiles at New: profs as compiled by
// the caller (no bytes known: Source file, hash of nothing), or the
// default.
func (s *Server) initProfiles(profs []*profiles.Profile) error {
	if profs == nil {
		l, err := LoadLocalProfiles("", "")
		if err != nil {
			return err
		}
		s.prof.local = l
	} else {
		s.prof.local = &LocalProfiles{Source: ProfilesFile, Explicit: true, profs: profs, Hash: fsm.ProfilesHash(nil, nil)}
	}
	s.rebuildProfiles(true)
	return nil
}

// ProfilesApplyRequest is the body of PUT /admin/v1/profiles.
type ProfilesApplyRequest struct {
	YAML          []byte            `json:"yaml"`
	Notifications map[string][]byte `json:"notifications,omitempty"`
	SetBy         string            `json:"set_by,omitempty"`
}

// ProfilesView is what GET /admin/v1/profiles answers (and PUT after an
// apply): the replicated set, if any, and what this node evaluates.
type ProfilesView struct {
	Replicated *ReplicatedProfilesView `json:"replicated"`
	InUse      InUseProfilesView       `json:"in_use"`
}

// ReplicatedProfilesView is the replicated set.
type ReplicatedProfilesView struct {
	YAML          []byte            `json:"yaml"`
	Notifications map[string][]byte `json:"notifications,omitempty"`
	Files         []string          `json:"files,omitempty"`
	Profiles      []string          `json:"profiles,omitempty"`
	SetBy         string            `json:"set_by,omitempty"`
	SetAt         int64             `json:"set_at"`
	Index         uint64            `json:"index"`
	Hash          string            `json:"hash"`
}

// InUseProfilesView is what this node evaluates.
type InUseProfilesView struct {
	Source       string   `json:"source"`
	Hash         string   `json:"hash"`
	Profiles     []string `json:"profiles"`
	LocalHash    string   `json:"local_hash"`
	LocalDiffers bool     `json:"local_differs,omitempty"`
	Error        string   `json:"error,omitempty"`
}

func (s *Server) profilesView() ProfilesView {
	a := s.Profiles()
	v := ProfilesView{InUse: InUseProfilesView{Source: a.Source, Hash: a.Hash, LocalHash: a.LocalHash,
		LocalDiffers: a.LocalDiffers, Error: a.Error, Profiles: profileNames(a.Engine.Profiles())}}
	if p := s.fsm.Profiles(); p != nil {
		r := &ReplicatedProfilesView{YAML: p.YAML, Notifications: p.Notifications, SetBy: p.SetBy, SetAt: p.SetAt,
			Index: p.Index, Hash: p.Hash}
		for k := range p.Notifications {
			r.Files = append(r.Files, k)
		}
		sort.Strings(r.Files)
		if a.Replicated == p {
			r.Profiles = v.InUse.Profiles
		}
		v.Replicated = r
	}
	return v
}

func profileNames(ps []*profiles.Profile) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}
