package fsm

// Commands on decisions: expire by ID or filter, imports of pulled lists
// (CAPI, blocklists) and the expiries that go with them.

import (
	"runtime"
	"strings"
)

// importYieldEvery+1 is how many decisions an import applies between two
// yields of the apply goroutine (a power of two).
const importYieldEvery = 255

// DecisionsExpire soft-expires decisions by ID, or the active decisions
// matching Filter (evaluated at apply time, like AlertsDelete).
type DecisionsExpire struct {
	IDs       []int64         `json:"ids,omitempty"`
	Filter    *DecisionFilter `json:"filter,omitempty"`
	MustExist bool            `json:"must_exist,omitempty"`
}

// ImportDecisions stores a chunk of pulled decisions (CAPI, blocklists)
// the way CrowdSec does: existing decisions of the same origin with the
// same value on another alert are replaced. With AlertID 0 a new alert is
// created from Alert (its ID is the result's first ID); otherwise the
// decisions are attached to that alert (later chunks of one pull).
type ImportDecisions struct {
	AlertID   int64      `json:"alert_id,omitempty"`
	Alert     Alert      `json:"alert"`
	Decisions []Decision `json:"decisions"`
}

// ValueRef names decisions by scope and value.
type ValueRef struct {
	Scope string `json:"scope"`
	Value string `json:"value"`
}

// ExpireByValue soft-expires the active decisions of Origin with these
// values (CAPI "deleted"); a scope other than ip must match exactly.
type ExpireByValue struct {
	Origin string     `json:"origin"`
	Items  []ValueRef `json:"items"`
}

// ExpireSet soft-expires the active decisions of Origin and Scenario that
// do not belong to KeepAlertID: what a fresh full download of a blocklist
// no longer contains.
type ExpireSet struct {
	Origin      string `json:"origin"`
	Scenario    string `json:"scenario"`
	KeepAlertID int64  `json:"keep_alert_id"`
}

func (b DecisionsExpire) Validate() error {
	var k checker
	k.ids("ids", b.IDs)
	k.decisionFilter("filter", b.Filter)
	return k.err
}

func (b ImportDecisions) Validate() error {
	var k checker
	if b.AlertID < 0 {
		k.fail("alert_id", "is negative")
	}
	k.in("alert")
	k.alert(&b.Alert)
	k.out()
	k.count("decisions", len(b.Decisions), MaxDecisionsPerEntry)
	k.decisions("decisions", b.Decisions)
	return k.err
}

func (b ExpireByValue) Validate() error {
	var k checker
	k.name("origin", b.Origin, true)
	k.count("items", len(b.Items), MaxItemsPerEntry)
	for i := range b.Items {
		if k.err != nil {
			break
		}
		k.at("items", i)
		k.text("scope", b.Items[i].Scope)
		k.text("value", b.Items[i].Value)
		k.out()
	}
	return k.err
}

func (b ExpireSet) Validate() error {
	var k checker
	k.name("origin", b.Origin, true)
	k.name("scenario", b.Scenario, true)
	return k.err
}

func (s *state) decisionsExpire(e entryCtx, b *DecisionsExpire) *Result {
	ids := b.IDs
	if b.Filter != nil {
		ids = append(ids, s.matchActive(b.Filter, e.now)...)
	}
	exists := func(id int64) bool { return s.decision(id) != nil }
	return eachID(ids, b.MustExist, exists, func(id int64) bool { return s.expireDecision(e.index, id, e.now) })
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

func (s *state) importDecisions(e entryCtx, b *ImportDecisions) *Result {
	return s.importEach(e, b.AlertID, &b.Alert, len(b.Decisions), func(i int) Decision { return b.Decisions[i] })
}

// importEach imports decisions decision(0..n-1) under alert alertID, or
// under a new alert made from alert when alertID is 0 (ImportDecisions,
// ImportList).
func (s *state) importEach(e entryCtx, alertID int64, alert *Alert, n int, decision func(int) Decision) *Result {
	index, now := e.index, e.now
	var a *Alert
	if alertID != 0 {
		old := s.alert(alertID)
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
		na := *alert
		na.ID = s.nextAlertID
		s.nextAlertID++
		na.CreatedAt = now
		na.DecisionIDs = nil
		na.MachineID = ""
		a = &na
		s.alertCount++
	}
	stored := 0
	// replaced decisions, per alert: each alert is rebuilt once per
	// command, not once per replaced decision (that was O(n²) when a
	// list is re-imported over a big alert)
	detached := map[int64]map[int64]bool{}
	// the IP index's stretch known to hold only this command's own
	// decisions (sameValueSkipping): a list in address order walks the
	// index a few times, not once per value
	var span emptySpan
	for i := range n {
		if i&importYieldEvery == importYieldEvery {
			// let queries queued on this P run now rather than at the
			// next preemption (up to 10 ms away): a big list is ~100 ms
			// of apply per entry on a small node
			runtime.Gosched()
		}
		d := decision(i)
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
		s.sameValueSkipping(d.Value, vr, importSpan(&span), func(o *Decision) bool {
			// never the command's own decisions: what span relies on
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
		stored++
	}
	s.alerts.ReplaceOrInsert(a)
	for alertID, ids := range detached {
		s.detachAll(alertID, ids)
	}
	return &Result{IDs: []int64{a.ID}, N: stored}
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
	seen := 0
	s.decisions.Ascend(func(d *Decision) bool {
		if seen++; seen&importYieldEvery == 0 {
			runtime.Gosched() // a walk of every decision (see importYieldEvery)
		}
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
