package profiles

import (
	"sync"
	"time"
)

// stash is one named cache of GetFromStash/SetInStash: at most Size string
// entries (least recently used evicted first), each expiring after the
// expiration SetInStash gives or the stash's TTL. Unlike the reference's
// parser stashes, halapi's live in the LAPI process of each node and are not
// replicated: a value set while evaluating an alert on one node is not seen
// on another.
type stash struct {
	mu  sync.Mutex
	ttl time.Duration
	m   *lru[string]
	now func() time.Time
}

func newStash(size int, ttl time.Duration) *stash {
	return &stash{ttl: ttl, m: newLRU[string](size), now: time.Now}
}

func getFromStash(name, key string) (string, error) {
	s := state().stash[name]
	if s == nil {
		return "", nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, _ := s.m.get(key, s.now())
	return v, nil
}

func setInStash(name, key, value string, expiration *time.Duration) error {
	st := state()
	s := st.stash[name]
	if s == nil {
		return nil
	}
	if len(value) > MaxStashValueBytes || len(key) > MaxStashValueBytes {
		st.logger.Warn("SetInStash: key or value too large, not stored", "stash", name, "bytes", len(key)+len(value))
		return nil
	}
	ttl := s.ttl
	if expiration != nil {
		ttl = *expiration
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m.put(key, value, s.now().Add(ttl))
	return nil
}
