package fsm

import (
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"
)

// Validation of command bodies. The leader validates every command before
// it appends it to the raft log (cluster.Node), so nothing undecodable or
// invalid is ever committed. Apply does NOT validate: entries committed by
// older versions must apply exactly as those versions applied them, or the
// nodes of a mixed cluster would diverge. Apply only has to be total (no
// panic on any body that decodes).
//
// The bounds are generous enough for every real client (CAPI chunks of
// 1,000 decisions, 500-alert entries, big hub state blobs, `cscli
// decisions import` of a large list as one alert) but finite.
const (
	// MaxName bounds identifiers: machine IDs, bouncer names, allowlist
	// names, config keys, scopes, origins, types, scenarios.
	MaxName = 1024
	// MaxText bounds free-text fields (messages, descriptions, versions,
	// user-agent derived fields, meta values).
	MaxText = 64 << 10
	// MaxBlob bounds opaque blobs (hub state, datasources, config values,
	// the JWT key).
	MaxBlob = 16 << 20
	// MaxAlertsPerEntry bounds the alerts of one AlertsCreate (the API
	// splits a push into entries of 500).
	MaxAlertsPerEntry = 10_000
	// MaxDecisionsPerEntry bounds the decisions of one entry (all alerts
	// together, or one ImportDecisions chunk).
	MaxDecisionsPerEntry = 1 << 20
	// MaxEventsPerAlert and MaxMetaPerRecord bound nested lists.
	MaxEventsPerAlert = 100_000
	MaxMetaPerRecord  = 10_000
	// MaxItemsPerEntry bounds ID lists, names lists, allowlist items,
	// value refs and touches.
	MaxItemsPerEntry = 1 << 20
)

// Validator is implemented by every command body.
type Validator interface {
	Validate() error
}

// Validate checks that the body matches the type and is valid. It is what
// the leader runs on every command before raft.Apply.
func (c Command) Validate() error {
	cmd := commands.lookup(c.Type)
	if cmd == nil {
		return invalid("unknown command type %d", c.Type)
	}
	v, ok := c.Body.(Validator)
	if rv := reflect.ValueOf(c.Body); !ok || c.Body == nil || (rv.Kind() == reflect.Pointer && rv.IsNil()) {
		return invalid("command type %d has no body", c.Type)
	}
	if !cmd.takes(c.Body) {
		return invalid("command type %d does not take a %T body", c.Type, c.Body)
	}
	if len(c.ID) > 255 {
		return invalid("request ID longer than 255 bytes")
	}
	return v.Validate()
}

// DecodeValid decodes an entry and validates it: what the leader does with
// bytes a peer forwarded. The error is an *Error with CodeInvalid.
func DecodeValid(entry []byte) (Command, error) {
	c, err := Decode(entry)
	if err != nil {
		return c, invalid("undecodable command: %v", err)
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

func invalid(format string, args ...any) error {
	return &Error{Code: CodeInvalid, Message: "invalid command: " + fmt.Sprintf(format, args...)}
}

// checker accumulates the first error, naming the field. Nested lists
// push frames (in, at) instead of building field names, so validating a
// big entry allocates nothing until something fails.
type checker struct {
	err  error
	path []frame
}

type frame struct {
	name string
	idx  int // -1: not a list element
}

func (k *checker) in(name string)        { k.path = append(k.path, frame{name, -1}) }
func (k *checker) at(name string, i int) { k.path = append(k.path, frame{name, i}) }
func (k *checker) out()                  { k.path = k.path[:len(k.path)-1] }

func (k *checker) fail(field, format string, args ...any) {
	if k.err != nil {
		return
	}
	var b strings.Builder
	for _, f := range k.path {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(f.name)
		if f.idx >= 0 {
			fmt.Fprintf(&b, "[%d]", f.idx)
		}
	}
	if field != "" {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(field)
	}
	k.err = invalid("%s: %s", b.String(), fmt.Sprintf(format, args...))
}

// name: an identifier; required, bounded, valid UTF-8, no control chars.
func (k *checker) name(field, v string, required bool) {
	if v == "" {
		if required {
			k.fail(field, "is required")
		}
		return
	}
	if len(v) > MaxName {
		k.fail(field, "longer than %d bytes", MaxName)
		return
	}
	if !utf8.ValidString(v) {
		k.fail(field, "is not valid UTF-8")
		return
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			k.fail(field, "contains a control character")
			return
		}
	}
}

func (k *checker) text(field, v string) {
	if len(v) > MaxText {
		k.fail(field, "longer than %d bytes", MaxText)
	}
}

func (k *checker) textp(field string, v *string) {
	if v != nil {
		k.text(field, *v)
	}
}

func (k *checker) blob(field string, v []byte) {
	if len(v) > MaxBlob {
		k.fail(field, "larger than %d bytes", MaxBlob)
	}
}

func (k *checker) count(field string, n, limit int) {
	if n > limit {
		k.fail(field, "has %d entries, more than %d", n, limit)
	}
}

func (k *checker) nonNeg(field string, v int64) {
	if v < 0 {
		k.fail(field, "is negative")
	}
}

func (k *checker) ipValue(field, scope, value string) {
	if IsIPScope(scope) {
		if _, err := ParseRange(value); err != nil {
			k.fail(field, "%v", err)
		}
	}
}

// ipRange checks a pre-parsed range (filters carry them): family, prefix
// length and alignment, as ParseRange would have produced.
func (k *checker) ipRange(field string, r *IPRange) {
	if r == nil {
		return
	}
	var want IPRange
	switch r.Fam {
	case 4:
		if r.Bits > 32 {
			k.fail(field, "prefix length %d out of range", r.Bits)
			return
		}
		want = IPRange{Fam: 4, Bits: r.Bits, Start: r.Start.mask(96 + int(r.Bits)).andLow32()}
		want.End = want.Start.fill(96 + int(r.Bits)).andLow32()
	case 6:
		if r.Bits > 128 {
			k.fail(field, "prefix length %d out of range", r.Bits)
			return
		}
		want = IPRange{Fam: 6, Bits: r.Bits, Start: r.Start.mask(int(r.Bits))}
		want.End = want.Start.fill(int(r.Bits))
	default:
		k.fail(field, "unknown address family %d", r.Fam)
		return
	}
	if *r != want {
		k.fail(field, "is not an aligned prefix")
	}
}

func (k *checker) kvs(field string, kv []KV) {
	k.count(field, len(kv), MaxMetaPerRecord)
	for i := range kv {
		if k.err != nil {
			return
		}
		if len(kv[i].Key) > MaxText || len(kv[i].Value) > MaxText {
			k.at(field, i)
			k.text("key", kv[i].Key)
			k.text("value", kv[i].Value)
			k.out()
		}
	}
}

// alert checks an alert; the caller has pushed its frame.
func (k *checker) alert(a *Alert) {
	k.text("scenario", a.Scenario)
	k.text("uuid", a.UUID)
	k.text("scenario_hash", a.ScenarioHash)
	k.text("scenario_version", a.ScenarioVersion)
	k.text("message", a.Message)
	k.text("leakspeed", a.Leakspeed)
	k.text("machine_id", a.MachineID)
	s := &a.Source
	k.text("source.scope", s.Scope)
	k.text("source.value", s.Value)
	k.text("source.ip", s.IP)
	k.text("source.range", s.Range)
	k.text("source.as_number", s.AsNumber)
	k.text("source.as_name", s.AsName)
	k.text("source.cn", s.Cn)
	k.count("events", len(a.Events), MaxEventsPerAlert)
	for i := range a.Events {
		if k.err != nil {
			return
		}
		k.at("events", i)
		k.kvs("meta", a.Events[i].Meta)
		k.out()
	}
	k.kvs("meta", a.Meta)
	k.count("decision_ids", len(a.DecisionIDs), MaxDecisionsPerEntry)
	k.notify(a.Notify)
}

// decisions checks a list of decisions under field.
func (k *checker) decisions(field string, ds []Decision) {
	for i := range ds {
		if k.err != nil {
			return
		}
		k.at(field, i)
		k.decision(&ds[i])
		k.out()
	}
}

// decision checks a decision; the caller has pushed its frame.
func (k *checker) decision(d *Decision) {
	// The API accepts empty strings here (present and not null is all
	// CrowdSec's schema asks), so they are not required.
	k.name("origin", d.Origin, false)
	k.name("type", d.Type, false)
	k.name("scope", d.Scope, false)
	k.text("value", d.Value)
	k.text("scenario", d.Scenario)
	k.ipValue("value", d.Scope, d.Value)
}

// allowItems checks allowlist items. strict is false for console
// allowlists (AllowlistReplace), whose Apply skips items that do not parse
// rather than refusing the whole list (one bad line from the console must
// not block the others).
func (k *checker) allowItems(field string, items []AllowlistItem, strict bool) {
	k.count(field, len(items), MaxItemsPerEntry)
	for i := range items {
		if k.err != nil {
			return
		}
		k.at(field, i)
		k.text("value", items[i].Value)
		k.text("comment", items[i].Comment)
		if strict {
			if _, err := ParseRange(items[i].Value); err != nil {
				k.fail("value", "%v", err)
			}
			k.nonNeg("expiration", items[i].Expiration)
		}
		k.out()
	}
}

func (k *checker) names(field string, v []string, required bool) {
	if required && len(v) == 0 {
		k.fail(field, "is required")
	}
	k.count(field, len(v), MaxItemsPerEntry)
	for i := range v {
		if k.err != nil {
			return
		}
		k.at(field, i)
		k.name("", v[i], true)
		k.out()
	}
}

func (k *checker) ids(field string, v []int64) {
	k.count(field, len(v), MaxItemsPerEntry)
}

// Validate implementations, one per body.

func (k *checker) alertFilter(field string, f *AlertFilter) {
	if f == nil {
		return
	}
	k.text(field+".scope", f.Scope)
	k.text(field+".value", f.Value)
	k.text(field+".scenario", f.Scenario)
	k.text(field+".decision_type", f.DecisionType)
	k.text(field+".origin", f.Origin)
	k.ipRange(field+".ip", f.IP)
	if f.Limit < 0 {
		k.fail(field+".limit", "is negative")
	}
}

func (k *checker) decisionFilter(field string, f *DecisionFilter) {
	if f == nil {
		return
	}
	for name, l := range map[string][]string{"scopes": f.Scopes, "origins": f.Origins,
		"scenarios_containing": f.ScenariosContaining, "scenarios_not": f.ScenariosNot, "uuids": f.UUIDs} {
		fn := field + "." + name
		k.count(fn, len(l), MaxItemsPerEntry)
		for _, v := range l {
			k.text(fn, v)
		}
	}
	k.text(field+".value", f.Value)
	k.text(field+".type", f.Type)
	k.text(field+".scenario", f.Scenario)
	k.ipRange(field+".ip", f.IP)
	if f.Limit < 0 || f.Offset < 0 {
		k.fail(field+".limit", "is negative")
	}
}
