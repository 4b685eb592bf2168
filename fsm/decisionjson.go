package fsm

import (
	"encoding/json"
	"math"
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
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipWS(b, i+1) == len(b)
	}
	for {
		key, j, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipWS(b, i+1)
		switch key {
		case "id", "alert_id", "created_at", "until":
			neg, u, j, ok := plainInt(b, i)
			if !ok || u > 1<<63 || (!neg && u == 1<<63) {
				return false
			}
			v := int64(u)
			if neg {
				v = -v
			}
			switch key {
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
				return false
			}
			if key == "ci" {
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
				return false
			}
		case "uuid", "origin", "type", "scope", "value", "scenario":
			s, j, ok := plainString(b, i)
			if !ok {
				return false
			}
			switch key {
			case "uuid":
				u, err := ParseUUID(s)
				if err != nil {
					return false // let UnmarshalText decide
				}
				d.UUID = u
			case "origin":
				d.Origin = s
			case "type":
				d.Type = s
			case "scope":
				d.Scope = s
			case "value":
				d.Value = s
			default:
				d.Scenario = s
			}
			i = j
		default:
			return false
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return skipWS(b, i+1) == len(b)
		}
		if b[i] != ',' {
			return false
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

// plainString reads a string of printable ASCII without escapes at b[i].
func plainString(b []byte, i int) (string, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return "", 0, false
	}
	for j := i + 1; j < len(b); j++ {
		c := b[j]
		switch {
		case c == '"':
			return string(b[i+1 : j]), j + 1, true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return "", 0, false
		}
	}
	return "", 0, false
}

// plainInt reads an integer literal (optional minus, digits, no fraction
// or exponent) at b[i]: its sign and magnitude, false when it is not
// one or the magnitude overflows uint64.
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
	if j == start || (j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E')) {
		return false, 0, 0, false
	}
	return neg, v, j, true
}
