package importer

import "github.com/halapi/halapi/fsm"

// Kinds of carried records, as reports name them.
const (
	KindMachines       = "machines"
	KindBouncers       = "bouncers"
	KindAlerts         = "alerts"
	KindDecisions      = "decisions"
	KindAllowlists     = "allowlists"
	KindAllowlistItems = "allowlist items"
	KindCAPI           = "capi credentials"
	KindConsole        = "console options"
	KindProfiles       = "profiles"
)

// Kinds lists the kinds in report order.
var Kinds = []string{KindMachines, KindBouncers, KindAlerts, KindDecisions, KindAllowlists,
	KindAllowlistItems, KindCAPI, KindConsole, KindProfiles}

// Skip is a record that is not carried, with the reason.
type Skip struct {
	Kind   string `json:"kind"`
	Item   string `json:"item"`
	Reason string `json:"reason"`
}

// SourceAlert is an alert with the active decisions to carry.
type SourceAlert struct {
	Alert     fsm.Alert      `json:"alert"`
	Decisions []fsm.Decision `json:"decisions"`
}

// Credentials are CAPI credentials (online_api_credentials.yaml).
type Credentials struct {
	URL      string `json:"url"`
	Login    string `json:"login"`
	Password string `json:"password"`
	PapiURL  string `json:"papi_url,omitempty"`
}

// Source is what was read from a CrowdSec LAPI: the records to carry and
// those already known not to be carried.
type Source struct {
	Machines   []fsm.Machine   `json:"machines"`
	Bouncers   []fsm.Bouncer   `json:"bouncers"`
	Alerts     []SourceAlert   `json:"alerts"`
	Allowlists []fsm.Allowlist `json:"allowlists"`
	CAPI       *Credentials    `json:"capi,omitempty"`
	Skipped    []Skip          `json:"skipped,omitempty"`
}

// Count is the plan for one kind.
type Count struct {
	Kind       string `json:"kind"`
	Add        int    `json:"add"`
	Present    int    `json:"present"`
	NotCarried int    `json:"not_carried"`
}

// Report is the outcome of a plan (dry run) or of an import.
type Report struct {
	Counts  []Count  `json:"counts"`
	Skipped []Skip   `json:"skipped,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	// Applied is true when the additions were written.
	Applied bool `json:"applied"`
}

func (r *Report) count(kind string) *Count {
	for i := range r.Counts {
		if r.Counts[i].Kind == kind {
			return &r.Counts[i]
		}
	}
	r.Counts = append(r.Counts, Count{Kind: kind})
	return &r.Counts[len(r.Counts)-1]
}

// Skip records a record that is not carried.
func (r *Report) Skip(kind, item, reason string) {
	r.count(kind).NotCarried++
	r.Skipped = append(r.Skipped, Skip{Kind: kind, Item: item, Reason: reason})
}

// Present counts a record already in the target.
func (r *Report) Present(kind string) { r.count(kind).Present++ }

// Add counts a record to add.
func (r *Report) Add(kind string, n int) { r.count(kind).Add += n }

// Sort puts the counts in Kinds order, every kind present.
func (r *Report) Sort() {
	out := make([]Count, 0, len(Kinds))
	for _, k := range Kinds {
		out = append(out, *r.count(k))
	}
	for _, c := range r.Counts {
		known := false
		for _, k := range Kinds {
			known = known || k == c.Kind
		}
		if !known {
			out = append(out, c)
		}
	}
	r.Counts = out
}

// Changes is the number of records the plan adds.
func (r *Report) Changes() int {
	n := 0
	for _, c := range r.Counts {
		n += c.Add
	}
	return n
}

// Parts splits a Source into requests of bounded size: the first holds
// everything but the alerts (and the not-carried list), the others the
// alerts, at most maxDecisions decisions each (an alert is never split).
// Planning the parts one after the other gives the same result as the
// whole: each part's records are matched against the state the previous
// parts left.
func (s *Source) Parts(maxDecisions int) []*Source {
	first := *s
	first.Alerts = nil
	out := []*Source{&first}
	var cur *Source
	n := 0
	for _, a := range s.Alerts {
		if cur == nil || (n > 0 && n+len(a.Decisions) > maxDecisions) {
			cur = &Source{}
			out = append(out, cur)
			n = 0
		}
		cur.Alerts = append(cur.Alerts, a)
		n += len(a.Decisions)
	}
	return out
}

// Merge adds the counts, not-carried records and notes of another report
// (of another part of the same Source). Applied stays true only if both
// were applied.
func (r *Report) Merge(o Report) {
	applied := r.Applied && o.Applied
	r.Include(o)
	r.Applied = applied
}

// Include adds the counts, not-carried records and notes of another
// report (ReadLocalFiles'), leaving Applied as it is.
func (r *Report) Include(o Report) {
	for _, c := range o.Counts {
		mine := r.count(c.Kind)
		mine.Add += c.Add
		mine.Present += c.Present
		mine.NotCarried += c.NotCarried
	}
	r.Skipped = append(r.Skipped, o.Skipped...)
	r.Notes = append(r.Notes, o.Notes...)
	r.Sort()
}
