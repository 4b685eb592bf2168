package fsm

// Commands on cluster secrets and settings: the JWT signing key and the
// replicated settings (CAPI credentials, cursors, one-time claims).

type SetJWTKey struct {
	Key []byte `json:"key"`
}

// SetConfig stores (or with an empty Value deletes) a replicated setting:
// CAPI credentials and token, push cursors, last-pull times.
type SetConfig struct {
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
	// IfAbsent makes the write a first-writer-wins claim (one-time tokens):
	// Result.N is 1 when this command set the key, 0 when it existed.
	IfAbsent bool `json:"if_absent,omitempty"`
}

func (b SetJWTKey) Validate() error {
	if len(b.Key) == 0 {
		return invalid("key: is required")
	}
	var k checker
	k.blob("key", b.Key)
	return k.err
}

func (b SetConfig) Validate() error {
	var k checker
	k.name("key", b.Key, true)
	k.blob("value", b.Value)
	return k.err
}

func (s *state) setJWTKey(_ entryCtx, b *SetJWTKey) *Result {
	if len(s.jwtKey) == 0 && len(b.Key) > 0 {
		s.jwtKey = append([]byte(nil), b.Key...)
		return &Result{N: 1}
	}
	return &Result{}
}

func (s *state) setConfig(_ entryCtx, b *SetConfig) *Result {
	if _, exists := s.config[b.Key]; exists && b.IfAbsent {
		return &Result{N: 0}
	}
	if len(b.Value) == 0 {
		delete(s.wConfig(), b.Key)
	} else {
		s.wConfig()[b.Key] = append([]byte(nil), b.Value...)
	}
	return &Result{N: 1}
}
