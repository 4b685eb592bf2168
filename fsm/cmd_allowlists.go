package fsm

// Commands on allowlists: create, delete, add and remove items, and the
// console's replace; adding an item expires the decisions it covers.

type AllowlistCreate struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

type AllowlistDelete struct {
	Name string `json:"name"`
}

type AllowlistAdd struct {
	Name  string          `json:"name"`
	Items []AllowlistItem `json:"items"`
}

type AllowlistRemove struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// AllowlistReplace creates or replaces a console-managed allowlist
// (found by AllowlistID, else by Name) with exactly these items, then
// expires active decisions that an item covers or is covered by.
type AllowlistReplace struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	AllowlistID string          `json:"allowlist_id"`
	Items       []AllowlistItem `json:"items"`
}

func (b AllowlistCreate) Validate() error {
	var k checker
	k.name("name", b.Name, true)
	k.text("description", b.Description)
	return k.err
}

func (b AllowlistDelete) Validate() error {
	var k checker
	k.name("name", b.Name, true)
	return k.err
}

func (b AllowlistAdd) Validate() error {
	var k checker
	k.name("name", b.Name, true)
	k.allowItems("items", b.Items, true)
	return k.err
}

func (b AllowlistRemove) Validate() error {
	var k checker
	k.name("name", b.Name, true)
	k.count("values", len(b.Values), MaxItemsPerEntry)
	for _, v := range b.Values {
		k.text("values", v)
	}
	return k.err
}

func (b AllowlistReplace) Validate() error {
	var k checker
	k.name("name", b.Name, true)
	k.text("description", b.Description)
	k.text("allowlist_id", b.AllowlistID)
	k.allowItems("items", b.Items, false)
	return k.err
}

func (s *state) allowlistCreate(e entryCtx, b *AllowlistCreate) *Result {
	if _, ok := s.allowlists[b.Name]; ok {
		return fail(CodeConflict, "allowlist '%s' already exists", b.Name)
	}
	s.wAllowlists()[b.Name] = &Allowlist{Name: b.Name, Description: b.Description, CreatedAt: e.now, UpdatedAt: e.now}
	return &Result{N: 1}
}

func (s *state) allowlistDelete(_ entryCtx, b *AllowlistDelete) *Result {
	if _, ok := s.allowlists[b.Name]; !ok {
		return fail(CodeNotFound, "allowlist '%s' not found", b.Name)
	}
	delete(s.wAllowlists(), b.Name)
	return &Result{N: 1}
}

func (s *state) allowlistAdd(e entryCtx, b *AllowlistAdd) *Result {
	index, now := e.index, e.now
	al, ok := s.allowlists[b.Name]
	if !ok {
		return fail(CodeNotFound, "allowlist '%s' not found", b.Name)
	}
	if al.ConsoleManaged {
		return fail(CodeForbidden, "allowlist '%s' is managed by the console", b.Name)
	}
	na := *al
	na.Items = append([]AllowlistItem(nil), al.Items...)
	have := map[string]bool{}
	for _, it := range na.Items {
		have[it.Value] = true
	}
	n := 0
	var added []IPRange
	for _, it := range b.Items {
		if have[it.Value] {
			continue
		}
		r, err := ParseRange(it.Value)
		if err != nil {
			return fail(CodeInvalid, "%v", err)
		}
		it.Range = r
		it.CreatedAt = now
		have[it.Value] = true
		na.Items = append(na.Items, it)
		if it.Expiration == 0 || it.Expiration >= now {
			added = append(added, r)
		}
		n++
	}
	na.UpdatedAt = now
	s.wAllowlists()[b.Name] = &na
	s.expireCovered(index, added, now)
	return &Result{N: n}
}

func (s *state) allowlistRemove(e entryCtx, b *AllowlistRemove) *Result {
	al, ok := s.allowlists[b.Name]
	if !ok {
		return fail(CodeNotFound, "allowlist '%s' not found", b.Name)
	}
	drop := map[string]bool{}
	for _, v := range b.Values {
		drop[v] = true
	}
	na := *al
	na.Items = nil
	n := 0
	for _, it := range al.Items {
		if drop[it.Value] {
			n++
			continue
		}
		na.Items = append(na.Items, it)
	}
	na.UpdatedAt = e.now
	s.wAllowlists()[b.Name] = &na
	return &Result{N: n}
}

func (s *state) allowlistReplace(e entryCtx, b *AllowlistReplace) *Result {
	index, now := e.index, e.now
	var al *Allowlist
	for _, x := range s.allowlists {
		if b.AllowlistID != "" && x.AllowlistID == b.AllowlistID {
			al = x
		}
	}
	if al == nil {
		al = s.allowlists[b.Name]
	}
	na := Allowlist{Name: b.Name, Description: b.Description, AllowlistID: b.AllowlistID, ConsoleManaged: true,
		CreatedAt: now, UpdatedAt: now}
	if al != nil {
		na.CreatedAt = al.CreatedAt
		if al.Name != b.Name {
			delete(s.wAllowlists(), al.Name)
		}
	}
	var ranges []IPRange
	for _, it := range b.Items {
		r, err := ParseRange(it.Value)
		if err != nil {
			continue
		}
		it.Range = r
		if it.CreatedAt == 0 {
			it.CreatedAt = now
		}
		na.Items = append(na.Items, it)
		if it.Expiration == 0 || it.Expiration >= now {
			ranges = append(ranges, r)
		}
	}
	s.wAllowlists()[na.Name] = &na
	s.expireCovered(index, ranges, now)
	return &Result{N: len(na.Items)}
}

// expireCovered soft-expires active decisions covered by, or covering,
// any of the ranges.
func (s *state) expireCovered(index uint64, ranges []IPRange, now int64) {
	seen := map[int64]bool{}
	var hit []int64
	add := func(d *Decision) bool {
		if d.Until > now && !seen[d.ID] {
			seen[d.ID] = true
			hit = append(hit, d.ID)
		}
		return true
	}
	for _, r := range ranges {
		s.covering(r, add)
		s.inside(r, add)
	}
	for _, id := range hit {
		s.expireDecision(index, id, now)
	}
}
