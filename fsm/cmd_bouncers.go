package fsm

// Commands on bouncers: create, update, delete, and the API key index
// (byKey) they maintain.

type BouncerCreate struct {
	Bouncer Bouncer `json:"bouncer"`
}

// BouncerUpdate patches a bouncer; nil fields are left alone.
type BouncerUpdate struct {
	Name         string  `json:"name"`
	IP           *string `json:"ip,omitempty"`
	Type         *string `json:"type,omitempty"`
	Version      *string `json:"version,omitempty"`
	OSName       *string `json:"os_name,omitempty"`
	OSVersion    *string `json:"os_version,omitempty"`
	FeatureFlags *string `json:"feature_flags,omitempty"`
}

type BouncerDelete struct {
	Names []string `json:"names"`
}

func (b BouncerCreate) Validate() error {
	var k checker
	nb := &b.Bouncer
	k.name("bouncer.name", nb.Name, true)
	k.text("bouncer.key_hash", nb.KeyHash)
	k.text("bouncer.ip", nb.IP)
	k.text("bouncer.type", nb.Type)
	k.text("bouncer.version", nb.Version)
	k.name("bouncer.auth_type", nb.AuthType, false)
	k.text("bouncer.os_name", nb.OSName)
	k.text("bouncer.os_version", nb.OSVersion)
	k.text("bouncer.feature_flags", nb.FeatureFlags)
	return k.err
}

func (b BouncerUpdate) Validate() error {
	var k checker
	k.name("name", b.Name, true)
	k.textp("ip", b.IP)
	k.textp("type", b.Type)
	k.textp("version", b.Version)
	k.textp("os_name", b.OSName)
	k.textp("os_version", b.OSVersion)
	k.textp("feature_flags", b.FeatureFlags)
	return k.err
}

func (b BouncerDelete) Validate() error {
	var k checker
	k.names("names", b.Names, true)
	return k.err
}

func (s *state) bouncerCreate(e entryCtx, b *BouncerCreate) *Result {
	if _, ok := s.bouncers[b.Bouncer.Name]; ok {
		return fail(CodeConflict, "bouncer %s already exists", b.Bouncer.Name)
	}
	nb := b.Bouncer
	nb.CreatedAt, nb.UpdatedAt = e.now, e.now
	s.putBouncer(&nb)
	return &Result{N: 1}
}

func (s *state) bouncerUpdate(e entryCtx, b *BouncerUpdate) *Result {
	now := e.now
	old, ok := s.bouncers[b.Name]
	if !ok {
		return notFound()
	}
	nb := *old
	setIf(&nb.IP, b.IP)
	setIf(&nb.Type, b.Type)
	setIf(&nb.Version, b.Version)
	setIf(&nb.OSName, b.OSName)
	setIf(&nb.OSVersion, b.OSVersion)
	setIf(&nb.FeatureFlags, b.FeatureFlags)
	nb.UpdatedAt = now
	s.wBouncers()[nb.Name] = &nb
	return &Result{N: 1}
}

func (s *state) bouncerDelete(_ entryCtx, b *BouncerDelete) *Result {
	n := 0
	for _, name := range b.Names {
		if s.deleteBouncer(name) {
			n++
		}
	}
	return &Result{N: n}
}

func (s *state) putBouncer(b *Bouncer) {
	if _, ok := s.bouncers[b.Name]; !ok {
		s.wByKey()[b.KeyHash] = append(s.byKey[b.KeyHash], b.Name)
	}
	s.wBouncers()[b.Name] = b
}

func (s *state) deleteBouncer(name string) bool {
	b, ok := s.bouncers[name]
	if !ok {
		return false
	}
	delete(s.wBouncers(), name)
	names := s.byKey[b.KeyHash]
	for i, n := range names {
		if n == name {
			names = append(names[:i:i], names[i+1:]...)
			break
		}
	}
	if len(names) == 0 {
		delete(s.wByKey(), b.KeyHash)
	} else {
		s.wByKey()[b.KeyHash] = names
	}
	return true
}
