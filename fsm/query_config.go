package fsm

// Read side: the JWT key and replicated settings.

import "strings"

// JWTKey returns the cluster's JWT signing key (nil until set).
func (f *FSM) JWTKey() []byte {
	s := f.read()
	return s.jwtKey
}

// Config returns a replicated setting, or nil.
func (f *FSM) Config(key string) []byte {
	s := f.read()
	return s.config[key]
}

// ConfigPrefix returns every setting whose key starts with prefix.
func (f *FSM) ConfigPrefix(prefix string) map[string][]byte {
	s := f.read()
	out := map[string][]byte{}
	for k, v := range s.config {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}
