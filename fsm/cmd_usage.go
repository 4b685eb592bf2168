package fsm

import "encoding/json"

// Usage metrics: what agents (log processors) and bouncers (remediation
// components) send to POST /v1/usage-metrics, kept per component until the
// leader has forwarded them to the Central API, as CrowdSec keeps them in
// its metrics table. The payload is stored as sent (its "metrics" list of
// DetailedMetrics, JSON); the FSM never interprets it.

// Usage component kinds.
const (
	UsageLogProcessor = "lp" // a machine (agent)
	UsageRemediation  = "rc" // a bouncer
)

// Bounds of the usage metrics kept per component: a component holds at most
// MaxUsageRecords records and MaxUsageBytes of payload; the oldest are
// dropped first. A record already forwarded to the Central API is dropped
// as soon as a newer one arrives.
const (
	MaxUsageRecords = 8
	MaxUsageBytes   = 128 << 10
)

// UsageRecord is one usage-metrics payload a component sent.
type UsageRecord struct {
	// ReceivedAt is the leader's time of the write (unix ns).
	ReceivedAt int64 `json:"at"`
	// Metrics is the payload's "metrics" list (DetailedMetrics), as sent.
	Metrics json.RawMessage `json:"metrics"`
	// Sent is set once the Central API accepted it.
	Sent bool `json:"sent,omitempty"`
}

// UsageAdd stores a payload for a machine (Kind "lp", Name = machine ID)
// or a bouncer (Kind "rc", Name = bouncer name).
type UsageAdd struct {
	Kind    string          `json:"kind"`
	Name    string          `json:"name"`
	Metrics json.RawMessage `json:"metrics"`
}

// UsageSent marks every record of each listed component received at or
// before UpTo as forwarded.
type UsageSent struct {
	Marks []UsageMark `json:"marks"`
}

// UsageMark is one component's forwarded watermark.
type UsageMark struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	UpTo int64  `json:"up_to"`
}

// UsageFlush drops the records received before Before (unix ns): what
// CrowdSec's flush does with db_config.flush.metrics_max_age.
type UsageFlush struct {
	Before int64 `json:"before"`
}

func (b UsageFlush) Validate() error {
	if b.Before <= 0 {
		return invalid("before: must be a positive unix time")
	}
	return nil
}

func (b UsageAdd) Validate() error {
	var k checker
	k.kind(b.Kind)
	k.name("name", b.Name, true)
	if k.err == nil {
		if len(b.Metrics) > MaxUsageBytes {
			k.fail("metrics", "longer than %d bytes", MaxUsageBytes)
		} else if len(b.Metrics) == 0 || !json.Valid(b.Metrics) || b.Metrics[0] != '[' {
			k.fail("metrics", "is not a JSON list")
		}
	}
	return k.err
}

func (b UsageSent) Validate() error {
	var k checker
	if len(b.Marks) > MaxItemsPerEntry {
		k.fail("marks", "more than %d", MaxItemsPerEntry)
	}
	for i := range b.Marks {
		k.at("marks", i)
		k.kind(b.Marks[i].Kind)
		k.name("name", b.Marks[i].Name, true)
		k.out()
		if k.err != nil {
			break
		}
	}
	return k.err
}

func (k *checker) kind(v string) {
	if v != UsageLogProcessor && v != UsageRemediation {
		k.fail("kind", "must be %q or %q", UsageLogProcessor, UsageRemediation)
	}
}

// keepUsage appends r to a component's records within the bounds.
func keepUsage(old []UsageRecord, r UsageRecord) []UsageRecord {
	out := make([]UsageRecord, 0, len(old)+1)
	for _, o := range old {
		if !o.Sent {
			out = append(out, o)
		}
	}
	out = append(out, r)
	size := 0
	for _, o := range out {
		size += len(o.Metrics)
	}
	for len(out) > MaxUsageRecords || size > MaxUsageBytes {
		size -= len(out[0].Metrics)
		out = out[1:]
	}
	return out
}

// markUsage marks the records received at or before upTo as sent, keeping
// only the newest of the sent ones (what inspect shows).
func markUsage(old []UsageRecord, upTo int64) []UsageRecord {
	out := make([]UsageRecord, 0, len(old))
	for _, o := range old {
		if o.ReceivedAt <= upTo {
			o.Sent = true
		}
		out = append(out, o)
	}
	// drop every sent record but the last one
	last := -1
	for i, o := range out {
		if o.Sent {
			last = i
		}
	}
	kept := out[:0]
	for i, o := range out {
		if !o.Sent || i == last {
			kept = append(kept, o)
		}
	}
	return kept
}

func (s *state) usageAdd(e entryCtx, b *UsageAdd) *Result {
	r := UsageRecord{ReceivedAt: e.now, Metrics: append(json.RawMessage(nil), b.Metrics...)}
	if b.Kind != UsageLogProcessor && b.Kind != UsageRemediation {
		return fail(CodeInvalid, "unknown usage component kind %q", b.Kind)
	}
	if !s.updateUsage(b.Kind, b.Name, func(old []UsageRecord) ([]UsageRecord, bool) { return keepUsage(old, r), true }) {
		return notFound()
	}
	return &Result{N: 1}
}

func (s *state) usageSent(_ entryCtx, b *UsageSent) *Result {
	n := 0
	for _, mk := range b.Marks {
		if s.updateUsage(mk.Kind, mk.Name, func(old []UsageRecord) ([]UsageRecord, bool) {
			return markUsage(old, mk.UpTo), len(old) > 0
		}) {
			n++
		}
	}
	return &Result{N: n}
}

// updateUsage replaces the usage records of a machine (kind "lp") or a
// bouncer ("rc") with what fn returns, unless fn says no (false). It
// reports whether the component exists and was changed.
func (s *state) updateUsage(kind, name string, fn func([]UsageRecord) ([]UsageRecord, bool)) bool {
	switch kind {
	case UsageLogProcessor:
		if old, ok := s.machines[name]; ok {
			if u, change := fn(old.Usage); change {
				m := *old
				m.Usage = u
				s.wMachines()[m.ID] = &m
				return true
			}
		}
	case UsageRemediation:
		if old, ok := s.bouncers[name]; ok {
			if u, change := fn(old.Usage); change {
				nb := *old
				nb.Usage = u
				s.wBouncers()[nb.Name] = &nb
				return true
			}
		}
	}
	return false
}

func (s *state) usageFlush(_ entryCtx, b *UsageFlush) *Result {
	keep := func(rs []UsageRecord) ([]UsageRecord, int) {
		var out []UsageRecord
		for _, r := range rs {
			if r.ReceivedAt >= b.Before {
				out = append(out, r)
			}
		}
		return out, len(rs) - len(out)
	}
	n := 0
	for id, old := range s.machines {
		if kept, dropped := keep(old.Usage); dropped > 0 {
			m := *old
			m.Usage = kept
			s.wMachines()[id] = &m
			n += dropped
		}
	}
	for name, old := range s.bouncers {
		if kept, dropped := keep(old.Usage); dropped > 0 {
			nb := *old
			nb.Usage = kept
			s.wBouncers()[name] = &nb
			n += dropped
		}
	}
	return &Result{N: n}
}

// Unsent returns the records not yet forwarded to the Central API.
func Unsent(rs []UsageRecord) []UsageRecord {
	var out []UsageRecord
	for _, r := range rs {
		if !r.Sent {
			out = append(out, r)
		}
	}
	return out
}
