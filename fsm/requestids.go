package fsm

// Request IDs: the results of the last idempotent commands (entry
// format v2), so that a retried write is applied once.

// dedupCap bounds the remembered request IDs: far more than the writes
// that can be in flight while a leader changes.
const dedupCap = 1 << 16

func (s *state) seen(id string) (*Result, bool) {
	if id == "" {
		return nil, false
	}
	r, ok := s.done[id]
	return r, ok
}

func (s *state) remember(id string, r *Result) {
	if id == "" {
		return
	}
	if len(s.doneOrder) >= dedupCap {
		delete(s.done, s.doneOrder[0])
		s.doneOrder = s.doneOrder[1:]
	}
	s.done[id] = r
	s.doneOrder = append(s.doneOrder, id)
}
