package fsm

import (
	"encoding/json"
	"runtime"
)

// listYieldEvery+1 is how many list values fastImportList and
// ImportList.Validate handle between two runtime.Gosched calls: a
// 50,000-value entry takes 11-14 ms to decode through encoding/json on one
// small core, all of it on the FSM's apply goroutine, and a node with one
// P would make every query that arrives meanwhile wait for it.
const listYieldEvery = 4095

// fastImportList decodes an ImportList body as encoding/json decodes it,
// for the form every halapi version writes: known lower-case keys, each
// at most once, values as strings of printable ASCII without escapes,
// untils as plain integers. It yields the P every listYieldEvery+1 values
// (see above). The alert and the seed go to the standard decoder. false
// means "decode with encoding/json" (FuzzImportListJSON checks that both
// give the same and that it takes nothing encoding/json refuses).
func fastImportList(b []byte) (*ImportList, bool) {
	out := &ImportList{}
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return out, skipWS(b, i+1) == len(b)
	}
	in := interner{}
	seen := map[string]bool{}
	for {
		key, j, ok := plainBytes(b, i)
		if !ok || seen[string(key)] {
			return nil, false
		}
		i = skipWS(b, j)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipWS(b, i+1)
		switch k := string(key); k {
		case "alert_id", "until":
			neg, u, j, ok := plainInt(b, i)
			if !ok || u > 1<<63 || (!neg && u == 1<<63) {
				return nil, false
			}
			v := int64(u)
			if neg {
				v = -v
			}
			if k == "alert_id" {
				out.AlertID = v
			} else {
				out.Until = v
			}
			i = j
		case "alert", "seed":
			j := skipJSONValue(b, i)
			if j < 0 {
				return nil, false
			}
			var err error
			if k == "alert" {
				err = json.Unmarshal(b[i:j], &out.Alert)
			} else {
				err = json.Unmarshal(b[i:j], &out.Seed)
			}
			if err != nil {
				return nil, false
			}
			i = j
		case "origin", "type", "scope", "scenario":
			s, j, ok := plainBytes(b, i)
			if !ok {
				return nil, false
			}
			v := in.str(s)
			switch k {
			case "origin":
				out.Origin = v
			case "type":
				out.Type = v
			case "scope":
				out.Scope = v
			default:
				out.Scenario = v
			}
			i = j
		case "values":
			j, ok := listItems(b, i, func(b []byte, i int) (int, bool) {
				s, j, ok := plainBytes(b, i)
				if ok {
					out.Values = append(out.Values, string(s))
				}
				return j, ok
			})
			if !ok {
				return nil, false
			}
			if out.Values == nil {
				out.Values = []string{} // what encoding/json gives for []
			}
			i = j
		case "untils":
			j, ok := listItems(b, i, func(b []byte, i int) (int, bool) {
				neg, u, j, ok := plainInt(b, i)
				if !ok || u > 1<<63 || (!neg && u == 1<<63) {
					return 0, false
				}
				v := int64(u)
				if neg {
					v = -v
				}
				out.Untils = append(out.Untils, v)
				return j, true
			})
			if !ok {
				return nil, false
			}
			if out.Untils == nil {
				out.Untils = []int64{}
			}
			i = j
		default:
			return nil, false
		}
		seen[string(key)] = true
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

// listItems walks the JSON array at b[i], handing each element's start to
// item (which returns the index after it), yielding the P every
// listYieldEvery+1 elements; it returns the index after the array.
func listItems(b []byte, i int, item func(b []byte, i int) (int, bool)) (int, bool) {
	if i >= len(b) || b[i] != '[' {
		return 0, false
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, true
	}
	for n := 0; ; n++ {
		if n&listYieldEvery == listYieldEvery {
			runtime.Gosched()
		}
		j, ok := item(b, i)
		if !ok {
			return 0, false
		}
		i = skipWS(b, j)
		if i >= len(b) {
			return 0, false
		}
		if b[i] == ']' {
			return i + 1, true
		}
		if b[i] != ',' {
			return 0, false
		}
		i = skipWS(b, i+1)
	}
}

// skipJSONValue returns the index after the JSON value at b[i], or -1
// when b is not valid there (unlike skipValue, b has not been checked:
// json.Unmarshal then validates the slice it is given).
func skipJSONValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	j := skipValue(b, i)
	if j <= i || j > len(b) {
		return -1
	}
	return j
}
