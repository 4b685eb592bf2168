package fsm

// Commands on alerts: create (with their decisions), delete, flush.

// NewAlert is an alert with its decisions, IDs not yet assigned.
type NewAlert struct {
	Alert     Alert      `json:"alert"`
	Decisions []Decision `json:"decisions,omitempty"`
}

type AlertsCreate struct {
	MachineID string     `json:"machine_id"`
	Alerts    []NewAlert `json:"alerts"`
}

// AlertsDelete deletes alerts by ID, or every alert matching Filter (the
// filter is evaluated when the entry is applied, on the replicated state,
// with the entry's time — never on a node's possibly stale copy).
// MustExist makes a missing ID an ErrNotFound.
type AlertsDelete struct {
	IDs       []int64      `json:"ids,omitempty"`
	Filter    *AlertFilter `json:"filter,omitempty"`
	MustExist bool         `json:"must_exist,omitempty"`
}

type Flush struct {
	MaxAge   int64 `json:"max_age,omitempty"` // nanoseconds, 0 = off
	MaxItems int   `json:"max_items,omitempty"`
}

func (b AlertsCreate) Validate() error {
	var k checker
	k.text("machine_id", b.MachineID)
	k.count("alerts", len(b.Alerts), MaxAlertsPerEntry)
	total := 0
	for i := range b.Alerts {
		if k.err != nil {
			break
		}
		total += len(b.Alerts[i].Decisions)
		if total > MaxDecisionsPerEntry {
			k.fail("alerts", "more than %d decisions", MaxDecisionsPerEntry)
			break
		}
		k.at("alerts", i)
		k.in("alert")
		k.alert(&b.Alerts[i].Alert)
		k.out()
		k.decisions("decisions", b.Alerts[i].Decisions)
		k.out()
	}
	return k.err
}

func (b AlertsDelete) Validate() error {
	var k checker
	k.ids("ids", b.IDs)
	k.alertFilter("filter", b.Filter)
	return k.err
}

func (b Flush) Validate() error {
	var k checker
	k.nonNeg("max_age", b.MaxAge)
	k.nonNeg("max_items", int64(b.MaxItems))
	return k.err
}

// tombstoneTTL is how long a hard-deleted active decision keeps being
// reported in stream "deleted" lists.
const tombstoneTTL = int64(24 * 3600 * 1e9)

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
