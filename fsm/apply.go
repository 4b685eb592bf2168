package fsm

import (
	"fmt"
	"sort"
	"strings"
)

// tombstoneTTL is how long a hard-deleted active decision keeps being
// reported in stream "deleted" lists.
const tombstoneTTL = int64(24 * 3600 * 1e9)

func (s *state) setJWTKey(_ entryCtx, b *SetJWTKey) *Result {
	if len(s.jwtKey) == 0 && len(b.Key) > 0 {
		s.jwtKey = append([]byte(nil), b.Key...)
		return &Result{N: 1}
	}
	return &Result{}
}

func (s *state) machineDelete(_ entryCtx, b *MachineDelete) *Result {
	n := 0
	var missing []string
	for _, id := range b.IDs {
		if _, ok := s.machines[id]; ok {
			delete(s.wMachines(), id)
			n++
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return &Result{N: n, Code: CodeNotFound, Message: fmt.Sprintf("'%s' does not exist", missing[0])}
	}
	return &Result{N: n}
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

func (s *state) bouncerDelete(_ entryCtx, b *BouncerDelete) *Result {
	n := 0
	for _, name := range b.Names {
		if s.deleteBouncer(name) {
			n++
		}
	}
	return &Result{N: n}
}

func (s *state) alertsDelete(e entryCtx, b *AlertsDelete) *Result {
	ids := b.IDs
	if b.Filter != nil {
		f := *b.Filter
		f.Limit = 0
		for _, a := range s.matchAlerts(&f, e.now) {
			ids = append(ids, a.ID)
		}
	}
	exists := func(id int64) bool { return s.alert(id) != nil }
	return eachID(ids, b.MustExist, exists, func(id int64) bool { return s.deleteAlert(e.index, id, e.now) })
}

func (s *state) decisionsExpire(e entryCtx, b *DecisionsExpire) *Result {
	ids := b.IDs
	if b.Filter != nil {
		ids = append(ids, s.matchActive(b.Filter, e.now)...)
	}
	exists := func(id int64) bool { return s.decision(id) != nil }
	return eachID(ids, b.MustExist, exists, func(id int64) bool { return s.expireDecision(e.index, id, e.now) })
}

// eachID calls do for every ID and counts the calls that changed
// something; with mustExist, nothing is done unless every ID exists.
func eachID(ids []int64, mustExist bool, exists, do func(int64) bool) *Result {
	if mustExist {
		for _, id := range ids {
			if !exists(id) {
				return notFound()
			}
		}
	}
	n := 0
	for _, id := range ids {
		if do(id) {
			n++
		}
	}
	return &Result{N: n}
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

func (s *state) expireByValue(e entryCtx, b *ExpireByValue) *Result {
	seen := map[int64]bool{}
	var hit []int64
	for _, it := range b.Items {
		s.sameValue(it.Value, parsePrefix(it.Value), func(d *Decision) bool {
			if seen[d.ID] || d.Origin != b.Origin || d.Until <= e.now {
				return true
			}
			if !strings.EqualFold(it.Scope, "ip") && d.Scope != it.Scope {
				return true
			}
			seen[d.ID] = true
			hit = append(hit, d.ID)
			return true
		})
	}
	for _, id := range hit {
		s.expireDecision(e.index, id, e.now)
	}
	return &Result{N: len(hit)}
}

func (s *state) expireSet(e entryCtx, b *ExpireSet) *Result {
	var hit []int64
	s.decisions.Ascend(func(d *Decision) bool {
		if d.Origin == b.Origin && d.Scenario == b.Scenario && d.AlertID != b.KeepAlertID && d.Until > e.now {
			hit = append(hit, d.ID)
		}
		return true
	})
	for _, id := range hit {
		s.expireDecision(e.index, id, e.now)
	}
	return &Result{N: len(hit)}
}

func (s *state) machineCreate(e entryCtx, b *MachineCreate) *Result {
	now := e.now
	if old, ok := s.machines[b.Machine.ID]; ok {
		if !b.Force {
			return fail(CodeConflict, "user '%s': user already exist", b.Machine.ID)
		}
		m := *old
		m.PasswordHash = b.Machine.PasswordHash
		m.Validated = m.Validated || b.Machine.Validated
		m.UpdatedAt = now
		s.wMachines()[m.ID] = &m
		return &Result{N: 1}
	}
	m := b.Machine
	m.CreatedAt, m.UpdatedAt = now, now
	s.wMachines()[m.ID] = &m
	return &Result{N: 1}
}

func (s *state) machineUpdate(e entryCtx, b *MachineUpdate) *Result {
	now := e.now
	old, ok := s.machines[b.ID]
	if !ok {
		return notFound()
	}
	m := *old
	if b.Validated != nil {
		m.Validated = *b.Validated
	}
	if b.Scenarios != nil {
		m.Scenarios = *b.Scenarios
		m.UpdatedAt = now
	}
	if b.IP != nil {
		m.IP = *b.IP
	}
	if b.Version != nil {
		m.Version = *b.Version
	}
	if b.OSName != nil {
		m.OSName = *b.OSName
	}
	if b.OSVersion != nil {
		m.OSVersion = *b.OSVersion
	}
	if b.FeatureFlags != nil {
		m.FeatureFlags = *b.FeatureFlags
	}
	if b.HubState != nil {
		m.HubState = b.HubState
	}
	if b.Datasources != nil {
		m.Datasources = b.Datasources
	}
	s.wMachines()[m.ID] = &m
	return &Result{N: 1}
}

func (s *state) bouncerUpdate(e entryCtx, b *BouncerUpdate) *Result {
	now := e.now
	old, ok := s.bouncers[b.Name]
	if !ok {
		return notFound()
	}
	nb := *old
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&nb.IP, b.IP)
	set(&nb.Type, b.Type)
	set(&nb.Version, b.Version)
	set(&nb.OSName, b.OSName)
	set(&nb.OSVersion, b.OSVersion)
	set(&nb.FeatureFlags, b.FeatureFlags)
	nb.UpdatedAt = now
	s.wBouncers()[nb.Name] = &nb
	return &Result{N: 1}
}

func (s *state) touch(_ entryCtx, b *Touch) *Result {
	n := 0
	for _, t := range b.Machines {
		old, ok := s.machines[t.ID]
		if !ok || t.LastHeartbeat <= old.LastHeartbeat {
			continue
		}
		m := *old
		m.LastHeartbeat = t.LastHeartbeat
		s.wMachines()[m.ID] = &m
		n++
	}
	for _, t := range b.Bouncers {
		old, ok := s.bouncers[t.Name]
		if !ok || (t.LastPull <= old.LastPull && t.Cursor <= old.Cursor) {
			continue
		}
		nb := *old
		nb.LastPull = max(nb.LastPull, t.LastPull)
		nb.Cursor = max(nb.Cursor, t.Cursor)
		s.wBouncers()[nb.Name] = &nb
		n++
	}
	return &Result{N: n}
}

func (s *state) alertsCreate(e entryCtx, b *AlertsCreate) *Result {
	index, now := e.index, e.now
	res := &Result{IDs: make([]int64, 0, len(b.Alerts))}
	for i := range b.Alerts {
		na := &b.Alerts[i]
		a := na.Alert
		a.ID = s.nextAlertID
		s.nextAlertID++
		a.CreatedAt = now
		a.DecisionIDs = nil
		if b.MachineID != "" {
			if _, ok := s.machines[b.MachineID]; ok {
				a.MachineID = b.MachineID
			}
		}
		for j := range na.Decisions {
			d := na.Decisions[j]
			d.ID = s.nextDecisionID
			s.nextDecisionID++
			d.AlertID = a.ID
			d.CreatedAt = now
			d.CreatedIndex = index
			d.DeletedIndex = 0
			d.Simulated = a.Simulated
			d.Until = ClampUntil(now, d.Until)
			if IsIPScope(d.Scope) {
				r, err := ParseRange(d.Value)
				if err != nil {
					// the API validates first; keep the FSM total anyway
					continue
				}
				d.Range = r.Prefix()
			}
			s.addDecision(&d)
			a.DecisionIDs = append(a.DecisionIDs, d.ID)
		}
		s.alerts.ReplaceOrInsert(&a)
		s.alertCount++
		res.IDs = append(res.IDs, a.ID)
	}
	if m, ok := s.machines[b.MachineID]; ok && len(b.Alerts) > 0 {
		nm := *m
		nm.LastPush = now
		s.wMachines()[nm.ID] = &nm
	}
	res.N = len(res.IDs)
	return res
}

// deleteAlert removes an alert and hard-deletes its decisions. Decisions
// that were still active become tombstones so streams report them as
// deleted (the reference forgets them; bouncers would keep the ban until
// its own timeout).
func (s *state) deleteAlert(index uint64, id int64, now int64) bool {
	a := s.alert(id)
	if a == nil {
		return false
	}
	s.alerts.Delete(a)
	s.alertCount--
	for _, did := range a.DecisionIDs {
		d := s.decision(did)
		if d == nil {
			continue
		}
		s.removeDecision(d)
		// Active, or expired recently enough that a bouncer may not have
		// been told yet: keep a tombstone.
		if d.Until > now-tombstoneTTL {
			t := *d
			t.Until = min(d.Until, now)
			t.DeletedIndex = index
			s.tombstones.ReplaceOrInsert(&t)
		}
	}
	return true
}

func (s *state) expireDecision(index uint64, id int64, now int64) bool {
	d := s.decision(id)
	if d == nil {
		return false
	}
	s.removeDecision(d)
	nd := *d
	if nd.Until > now {
		nd.Until = now
	}
	nd.DeletedIndex = index
	s.addDecision(&nd)
	return true
}

// autoDeleteVictims lists what an AutoDelete with these ages,
// applied at now, deletes (the leader checks before it
// writes an entry).
func (s *state) autoDeleteVictims(b *AutoDelete, now int64) (machines, bouncers []string) {
	stale := func(seen, age int64) bool { return age > 0 && seen != 0 && seen <= now-age }
	for id, m := range s.machines {
		switch {
		case m.AuthType == AuthTLS && stale(m.LastHeartbeat, b.AgentsCert),
			m.AuthType == AuthPassword && stale(m.LastHeartbeat, b.AgentsPassword):
			machines = append(machines, id)
		}
	}
	if len(machines) > 0 {
		// CrowdSec keeps a machine that owns alerts
		owners := map[string]bool{}
		s.alerts.Ascend(func(a *Alert) bool {
			owners[a.MachineID] = true
			return true
		})
		kept := machines[:0]
		for _, id := range machines {
			if !owners[id] {
				kept = append(kept, id)
			}
		}
		machines = kept
	}
	for name, bc := range s.bouncers {
		switch {
		case bc.AuthType == AuthTLS && stale(bc.LastPull, b.BouncersCert),
			bc.AuthType == AuthAPIKey && stale(bc.LastPull, b.BouncersAPIKey):
			bouncers = append(bouncers, name)
		}
	}
	sort.Strings(machines)
	sort.Strings(bouncers)
	return machines, bouncers
}

func (s *state) autoDelete(e entryCtx, b *AutoDelete) *Result {
	machines, bouncers := s.autoDeleteVictims(b, e.now)
	for _, id := range machines {
		delete(s.wMachines(), id)
	}
	for _, name := range bouncers {
		s.deleteBouncer(name)
	}
	return &Result{N: len(machines) + len(bouncers)}
}

func (s *state) flush(e entryCtx, b *Flush) *Result {
	index, now := e.index, e.now
	var victims []int64
	if b.MaxAge > 0 {
		limit := now - b.MaxAge
		s.alerts.Ascend(func(a *Alert) bool {
			if a.CreatedAt <= limit {
				victims = append(victims, a.ID)
			}
			return true
		})
	}
	if b.MaxItems > 0 && s.alertCount > b.MaxItems {
		if maxA, ok := s.alerts.Max(); ok {
			cut := maxA.ID - int64(b.MaxItems)
			s.alerts.Ascend(func(a *Alert) bool {
				if a.ID >= cut {
					return false
				}
				victims = append(victims, a.ID)
				return true
			})
		}
	}
	n := 0
	for _, id := range victims {
		if s.deleteAlert(index, id, now) {
			n++
		}
	}
	// expired decisions without an alert
	var orphans []*Decision
	s.byUntil.Ascend(func(d *Decision) bool {
		if d.Until > now {
			return false
		}
		if d.AlertID == 0 || s.alert(d.AlertID) == nil {
			orphans = append(orphans, d)
		}
		return true
	})
	for _, d := range orphans {
		s.removeDecision(d)
	}
	// old tombstones
	var old []*Decision
	s.tombstones.Ascend(func(d *Decision) bool {
		if d.Until < now-tombstoneTTL {
			old = append(old, d)
		}
		return true
	})
	for _, d := range old {
		s.tombstones.Delete(d)
	}
	// expired allowlist items
	for name, al := range s.allowlists {
		keep := al.Items[:0:0]
		changed := false
		for _, it := range al.Items {
			if it.Expiration != 0 && it.Expiration < now {
				changed = true
				continue
			}
			keep = append(keep, it)
		}
		if changed {
			na := *al
			na.Items = keep
			s.wAllowlists()[name] = &na
		}
	}
	return &Result{N: n}
}

func (s *state) importDecisions(e entryCtx, b *ImportDecisions) *Result {
	index, now := e.index, e.now
	var a *Alert
	if b.AlertID != 0 {
		old := s.alert(b.AlertID)
		if old == nil {
			return notFound()
		}
		cp := *old
		// Appending below may write into old's spare capacity: old (in a
		// published state or a snapshot) only reads its first
		// len(old.DecisionIDs) elements, which do not change, and only the
		// writer ever appends, to the newest record. Copying the list on
		// every chunk of a big import was O(n²).
		cp.DecisionIDs = old.DecisionIDs
		a = &cp
	} else {
		na := b.Alert
		na.ID = s.nextAlertID
		s.nextAlertID++
		na.CreatedAt = now
		na.DecisionIDs = nil
		na.MachineID = ""
		a = &na
		s.alertCount++
	}
	n := 0
	// replaced decisions, per alert: each alert is rebuilt once per
	// command, not once per replaced decision (that was O(n²) when a
	// list is re-imported over a big alert)
	detached := map[int64]map[int64]bool{}
	for i := range b.Decisions {
		d := b.Decisions[i]
		if IsIPScope(d.Scope) {
			r, err := ParseRange(d.Value)
			if err != nil {
				continue
			}
			d.Range = r.Prefix()
		}
		// replace same-origin decisions with this value on other alerts
		var old []*Decision
		vr := d.Range
		if !vr.Valid() {
			vr = parsePrefix(d.Value)
		}
		s.sameValue(d.Value, vr, func(o *Decision) bool {
			if o.Origin == d.Origin && o.AlertID != a.ID {
				old = append(old, o)
			}
			return true
		})
		for _, o := range old {
			s.removeDecision(o)
			if detached[o.AlertID] == nil {
				detached[o.AlertID] = map[int64]bool{}
			}
			detached[o.AlertID][o.ID] = true
			if o.Until > now && (o.Type != d.Type || o.Scope != d.Scope) {
				t := *o
				t.Until, t.DeletedIndex = now, index
				s.tombstones.ReplaceOrInsert(&t)
			}
		}
		d.ID = s.nextDecisionID
		s.nextDecisionID++
		d.AlertID = a.ID
		d.CreatedAt = now
		d.CreatedIndex = index
		d.DeletedIndex = 0
		d.Until = ClampUntil(now, d.Until)
		s.addDecision(&d)
		a.DecisionIDs = append(a.DecisionIDs, d.ID)
		n++
	}
	s.alerts.ReplaceOrInsert(a)
	for alertID, ids := range detached {
		s.detachAll(alertID, ids)
	}
	return &Result{IDs: []int64{a.ID}, N: n}
}

// detachAll drops decision IDs from one alert (the record is replaced once).
func (s *state) detachAll(alertID int64, ids map[int64]bool) {
	a := s.alert(alertID)
	if a == nil {
		return
	}
	cp := *a
	cp.DecisionIDs = make([]int64, 0, len(a.DecisionIDs))
	for _, id := range a.DecisionIDs {
		if !ids[id] {
			cp.DecisionIDs = append(cp.DecisionIDs, id)
		}
	}
	s.alerts.ReplaceOrInsert(&cp)
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
