package fsm

import (
	"encoding/json"
	"math"
	"strconv"
)

// decisionJSON is Decision without methods: the standard decoder's view.
type decisionJSON Decision

// UnmarshalJSON decodes a decision exactly as encoding/json decodes the
// plain struct (decisionJSON), faster for the common form every halapi
// version writes: the lower-case field names, strings of printable ASCII
// without escapes, integers, booleans. Anything else (escapes, non-ASCII
// text, null, numbers that are not plain integers, unknown or differently
// cased keys, nested values) goes to the standard decoder, so every input
// decodes to what older versions decode (FuzzDecisionJSON checks this).
// Decoding raft entries and snapshots is most of the cost of applying a
// big list and of restoring a snapshot.
func (d *Decision) UnmarshalJSON(b []byte) error {
	var fast Decision = *d
	if fastDecision(b, &fast) {
		*d = fast
		return nil
	}
	return json.Unmarshal(b, (*decisionJSON)(d))
}

// fastDecision parses b (a valid JSON value: the decoder checked it) into
// d; false means "use the standard decoder" (d may be partly written).
func fastDecision(b []byte, d *Decision) bool {
	end, ok := parseDecision(b, skipWS(b, 0), d, nil)
	return ok && skipWS(b, end) == len(b)
}

// interner returns one string for equal byte strings (the few origins,
// types, scopes and scenarios of a big list), without allocating on a hit.
type interner map[string]string

func (in interner) str(b []byte) string {
	if in == nil {
		return string(b)
	}
	if s, ok := in[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(in) < 1024 {
		in[s] = s
	}
	return s
}

// parseDecision parses the decision object at b[i] into d and returns the
// index after it; false means "use the standard decoder". in, when not
// nil, shares the strings of the low-cardinality fields.
func parseDecision(b []byte, i int, d *Decision, in interner) (int, bool) {
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, true
	}
	for {
		key, j, ok := plainBytes(b, i)
		if !ok {
			return 0, false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return 0, false
		}
		i = skipWS(b, i+1)
		switch string(key) {
		case "id", "alert_id", "created_at", "until":
			neg, u, j, ok := plainInt(b, i)
			if !ok || u > 1<<63 || (!neg && u == 1<<63) {
				return 0, false
			}
			v := int64(u)
			if neg {
				v = -v
			}
			switch string(key) {
			case "id":
				d.ID = v
			case "alert_id":
				d.AlertID = v
			case "created_at":
				d.CreatedAt = v
			default:
				d.Until = v
			}
			i = j
		case "ci", "di":
			neg, v, j, ok := plainInt(b, i)
			if !ok || neg {
				return 0, false
			}
			if string(key) == "ci" {
				d.CreatedIndex = v
			} else {
				d.DeletedIndex = v
			}
			i = j
		case "simulated":
			switch {
			case hasAt(b, i, "true"):
				d.Simulated, i = true, i+4
			case hasAt(b, i, "false"):
				d.Simulated, i = false, i+5
			default:
				return 0, false
			}
		case "uuid", "origin", "type", "scope", "value", "scenario":
			raw, j, ok := plainBytes(b, i)
			if !ok {
				return 0, false
			}
			switch string(key) {
			case "uuid":
				u, err := parseUUID(raw)
				if err != nil {
					return 0, false // let UnmarshalText decide
				}
				d.UUID = u
			case "origin":
				d.Origin = in.str(raw)
			case "type":
				d.Type = in.str(raw)
			case "scope":
				d.Scope = in.str(raw)
			case "value":
				d.Value = string(raw)
			default:
				d.Scenario = in.str(raw)
			}
			i = j
		default:
			return 0, false
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return 0, false
		}
		if b[i] == '}' {
			return i + 1, true
		}
		if b[i] != ',' {
			return 0, false
		}
		i = skipWS(b, i+1)
	}
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func hasAt(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// plainBytes reads a string of printable ASCII without escapes at b[i]
// (its bytes, not copied).
func plainBytes(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		c := b[j]
		switch {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// plainInt reads an integer literal (optional minus, digits without a
// leading zero, no fraction or exponent) at b[i]: its sign and magnitude,
// false when it is not one or the magnitude overflows uint64.
func plainInt(b []byte, i int) (neg bool, v uint64, end int, ok bool) {
	j := i
	if j < len(b) && b[j] == '-' {
		neg = true
		j++
	}
	start := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		c := uint64(b[j] - '0')
		if v > (math.MaxUint64-c)/10 {
			return false, 0, 0, false
		}
		v = v*10 + c
		j++
	}
	if j == start || (j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E')) || (b[start] == '0' && j > start+1) {
		return false, 0, 0, false
	}
	return neg, v, j, true
}

// fastImport decodes an ImportDecisions body (a big list: up to thousands
// of decisions per entry) the way encoding/json decodes it, without its
// per-element reflection, element re-scan and slice growth: keys must be
// exactly alert_id, alert and decisions (decisions at most once, an
// array); the alert is handed to the standard decoder, each decision to
// parseDecision or, when it is not in the plain form, to the standard
// decoder. false means "decode with encoding/json" (FuzzImportJSON checks
// both give the same).
func fastImport(b []byte) (*ImportDecisions, bool) {
	if !json.Valid(b) {
		return nil, false
	}
	out := &ImportDecisions{}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return out, true
	}
	in := interner{}
	seenDecisions := false
	for {
		key, j, ok := plainBytes(b, i)
		if !ok {
			return nil, false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipWS(b, i+1)
		switch string(key) {
		case "alert_id":
			neg, u, j, ok := plainInt(b, i)
			if !ok || u > 1<<63 || (!neg && u == 1<<63) {
				return nil, false
			}
			out.AlertID = int64(u)
			if neg {
				out.AlertID = -out.AlertID
			}
			i = j
		case "alert":
			j := skipValue(b, i)
			if json.Unmarshal(b[i:j], &out.Alert) != nil {
				return nil, false
			}
			i = j
		case "decisions":
			if seenDecisions || i >= len(b) || b[i] != '[' {
				return nil, false
			}
			seenDecisions = true
			out.Decisions = make([]Decision, 0, min(len(b)/160+1, 1<<16))
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			for {
				out.Decisions = append(out.Decisions, Decision{})
				d := &out.Decisions[len(out.Decisions)-1]
				j, ok := parseDecision(b, i, d, in)
				if !ok {
					*d = Decision{}
					j = skipValue(b, i)
					if json.Unmarshal(b[i:j], d) != nil {
						return nil, false
					}
				}
				i = skipWS(b, j)
				if i >= len(b) {
					return nil, false
				}
				if b[i] == ']' {
					i++
					break
				}
				if b[i] != ',' {
					return nil, false
				}
				i = skipWS(b, i+1)
			}
		default:
			return nil, false
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return nil, false
		}
		if b[i] == '}' {
			return out, skipWS(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return nil, false
		}
		i = skipWS(b, i+1)
	}
}

// skipValue returns the index after the JSON value at b[i] (b is valid).
func skipValue(b []byte, i int) int {
	depth := 0
	for ; i < len(b); i++ {
		switch c := b[i]; c {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
			if depth < 0 {
				return i
			}
		case ',', ' ', '\t', '\n', '\r', ':':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// fastRecord decodes a snapshot line holding one decision or tombstone
// record in the plain form ({"decision":{...}}), as encoding/json would;
// false means "decode the line with encoding/json".
func fastRecord(line []byte, in interner) (snapRecord, bool) {
	i := skipWS(line, 0)
	if i >= len(line) || line[i] != '{' {
		return snapRecord{}, false
	}
	key, j, ok := plainBytes(line, skipWS(line, i+1))
	if !ok || (string(key) != "decision" && string(key) != "tombstone") {
		return snapRecord{}, false
	}
	i = skipWS(line, j)
	if i >= len(line) || line[i] != ':' {
		return snapRecord{}, false
	}
	d := &Decision{}
	j, ok = parseDecision(line, skipWS(line, i+1), d, in)
	if !ok {
		return snapRecord{}, false
	}
	i = skipWS(line, j)
	if i >= len(line) || line[i] != '}' || skipWS(line, i+1) != len(line) {
		return snapRecord{}, false
	}
	if string(key) == "decision" {
		return snapRecord{Decision: d}, true
	}
	return snapRecord{Tombstone: d}, true
}

// appendRecord appends the snapshot line of a decision or tombstone
// record ({"decision":{...}}\n), byte for byte what json.Encoder writes
// for it, when every string is plain (printable ASCII that encoding/json
// does not escape); false means "encode it with encoding/json".
func appendRecord(buf []byte, key string, d *Decision) ([]byte, bool) {
	start := len(buf)
	buf = append(buf, `{"`...)
	buf = append(buf, key...)
	buf = append(buf, `":`...)
	buf, ok := appendDecision(buf, d)
	if !ok {
		return buf[:start], false
	}
	return append(buf, "}\n"...), true
}

// appendDecision appends d as json.Marshal encodes it, when every string
// is plain; false (buf unchanged) means "use encoding/json".
func appendDecision(buf []byte, d *Decision) ([]byte, bool) {
	for _, s := range [...]string{d.Origin, d.Type, d.Scope, d.Value, d.Scenario} {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return buf, false
			}
		}
	}
	buf = append(buf, `{"id":`...)
	buf = strconv.AppendInt(buf, d.ID, 10)
	if !d.UUID.IsZero() {
		buf = append(buf, `,"uuid":"`...)
		buf, _ = d.UUID.AppendText(buf)
		buf = append(buf, '"')
	}
	if d.AlertID != 0 {
		buf = append(buf, `,"alert_id":`...)
		buf = strconv.AppendInt(buf, d.AlertID, 10)
	}
	for _, f := range [...]struct{ k, v string }{{`,"origin":"`, d.Origin}, {`,"type":"`, d.Type},
		{`,"scope":"`, d.Scope}, {`,"value":"`, d.Value}, {`,"scenario":"`, d.Scenario}} {
		buf = append(buf, f.k...)
		buf = append(buf, f.v...)
		buf = append(buf, '"')
	}
	if d.Simulated {
		buf = append(buf, `,"simulated":true`...)
	}
	buf = append(buf, `,"created_at":`...)
	buf = strconv.AppendInt(buf, d.CreatedAt, 10)
	buf = append(buf, `,"until":`...)
	buf = strconv.AppendInt(buf, d.Until, 10)
	buf = append(buf, `,"ci":`...)
	buf = strconv.AppendUint(buf, d.CreatedIndex, 10)
	if d.DeletedIndex != 0 {
		buf = append(buf, `,"di":`...)
		buf = strconv.AppendUint(buf, d.DeletedIndex, 10)
	}
	return append(buf, '}'), true
}

// encodeBody is json.Marshal(body), with ImportDecisions (a big list's
// chunk, thousands of decisions) written without reflection: the same
// bytes (FuzzImportEncode checks this).
func encodeBody(body any) ([]byte, error) {
	var b *ImportDecisions
	switch x := body.(type) {
	case ImportDecisions:
		b = &x
	case *ImportDecisions:
		b = x
	}
	if b == nil {
		return json.Marshal(body)
	}
	alert, err := json.Marshal(&b.Alert)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 0, len(alert)+64+len(b.Decisions)*256)
	buf = append(buf, '{')
	if b.AlertID != 0 {
		buf = append(buf, `"alert_id":`...)
		buf = strconv.AppendInt(buf, b.AlertID, 10)
		buf = append(buf, ',')
	}
	buf = append(buf, `"alert":`...)
	buf = append(buf, alert...)
	buf = append(buf, `,"decisions":`...)
	if b.Decisions == nil {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '[')
		for i := range b.Decisions {
			if i > 0 {
				buf = append(buf, ',')
			}
			var ok bool
			if buf, ok = appendDecision(buf, &b.Decisions[i]); !ok {
				one, err := json.Marshal(&b.Decisions[i])
				if err != nil {
					return nil, err
				}
				buf = append(buf, one...)
			}
		}
		buf = append(buf, ']')
	}
	return append(buf, '}'), nil
}
