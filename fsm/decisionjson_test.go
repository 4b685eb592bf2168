package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// The fast decision decoder decodes every input exactly as the standard
// decoder decodes the plain struct (what older versions run): same value,
// and an error exactly when it errs.
func FuzzDecisionJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":3,"uuid":"0b5a7a2c-3e9f-4d1e-9c3a-5f2e8d7c6b1a","origin":"cscli","type":"ban","scope":"Ip","value":"1.2.3.4","scenario":"x","created_at":1,"until":2,"ci":4}`,
		`{"id":-9223372036854775808,"until":9223372036854775807,"ci":18446744073709551615,"di":0,"simulated":true}`,
		`{"id":9223372036854775808}`, `{"ci":-0}`, `{"ci":18446744073709551616}`, `{"id":1e3}`, `{"id":1.0}`,
		`{"ID":5,"Value":"x"}`, `{"value":"caf\u00e9"}`, "{\"value\":\"caf\xc3\xa9\"}", "{\"value\":\"\xff\"}",
		`{"value":null,"id":null}`, `null`, `{}`, ` { "id" : 1 , "value" : "a" } `, `{"uuid":"u-a"}`, `{"uuid":""}`,
		`{"simulated":1}`, `{"unknown":{"a":[1,2]},"id":2}`, `{"id":1,"id":2}`, `{"value":"a\"b"}`, `{"-":1}`, `[1]`, `"s"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return // the decoder never hands an invalid value to UnmarshalJSON
		}
		seed := Decision{ID: 7, Value: "old", Simulated: true, Until: 5}
		var std, fast decisionJSON = decisionJSON(seed), decisionJSON(seed)
		errStd := json.Unmarshal(b, &std)
		fd := Decision(fast)
		errFast := json.Unmarshal(b, &fd)
		if (errStd == nil) != (errFast == nil) {
			t.Fatalf("%s: standard error %v, fast error %v", b, errStd, errFast)
		}
		if errStd == nil && !reflect.DeepEqual(Decision(std), fd) {
			t.Fatalf("%s:\nstandard %+v\nfast     %+v", b, Decision(std), fd)
		}
		// inside a list, as in a raft entry
		wrapped := append(append([]byte(`{"decisions":[`), b...), `]}`...)
		var a struct {
			Decisions []decisionJSON `json:"decisions"`
		}
		var c struct {
			Decisions []Decision `json:"decisions"`
		}
		errA, errC := json.Unmarshal(wrapped, &a), json.Unmarshal(wrapped, &c)
		if (errA == nil) != (errC == nil) {
			t.Fatalf("in a list %s: standard error %v, fast error %v", b, errA, errC)
		}
		if errA == nil && (len(a.Decisions) != len(c.Decisions) || len(a.Decisions) == 1 && !reflect.DeepEqual(Decision(a.Decisions[0]), c.Decisions[0])) {
			t.Fatalf("in a list %s: standard %+v, fast %+v", b, a.Decisions, c.Decisions)
		}
	})
}

// fastImport, when it takes an ImportDecisions body, decodes it exactly as
// encoding/json does (and only bodies encoding/json accepts).
func FuzzImportJSON(f *testing.F) {
	d1 := `{"id":3,"uuid":"0b5a7a2c-3e9f-4d1e-9c3a-5f2e8d7c6b1a","origin":"CAPI","type":"ban","scope":"ip","value":"1.2.3.4","scenario":"x","created_at":1,"until":2,"ci":4}`
	for _, s := range []string{
		`{"alert":{"id":0,"created_at":0,"scenario":"update : +1/-0 IPs","start_at":1,"stop_at":1,"source":{"scope":"lists:x","value":""}},"decisions":[` + d1 + `]}`,
		`{"alert_id":7,"decisions":[` + d1 + `,` + d1 + `]}`, `{"alert_id":7,"decisions":[]}`, `{"decisions":null}`, `{}`,
		`{"alert_id":7,"decisions":[{"value":"caf\u00e9"},{"Value":"x"},null,{}]}`, `{"decisions":[1]}`, `{"Alert_ID":1}`,
		`{"alert_id":1,"alert_id":-2}`, `{"decisions":[],"decisions":[{}]}`, `{"alert":{"meta":[{"key":"a","value":"b\"]}"}]},"alert_id":1}`,
		` { "alert_id" : 9223372036854775807 , "decisions" : [ { "id" : 1 } ] } `, `{"alert_id":1e2}`, `[]`, `null`, `{"x":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := fastImport(b)
		var std ImportDecisions
		err := json.Unmarshal(b, &std)
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("%s: fast decode took it, encoding/json says %v", b, err)
		}
		if !reflect.DeepEqual(*fast, std) {
			t.Fatalf("%s:\nfast %+v\nstd  %+v", b, *fast, std)
		}
	})
}

// fastRecord, when it takes a snapshot line, decodes it as encoding/json
// does (and only lines encoding/json accepts).
func FuzzSnapshotLineJSON(f *testing.F) {
	d1 := `{"id":3,"uuid":"0b5a7a2c-3e9f-4d1e-9c3a-5f2e8d7c6b1a","origin":"CAPI","type":"ban","scope":"Ip","value":"1.2.3.4","scenario":"x","created_at":1,"until":2,"ci":4,"di":9}`
	for _, s := range []string{`{"decision":` + d1 + `}`, `{"tombstone":` + d1 + `}`, ` {"decision" : {} } `, `{"decision":null}`,
		`{"Decision":` + d1 + `}`, `{"decision":{"id":01}}`, `{"decision":{"id":1},"alert":{"id":2}}`, `{"decision":{"id":1}}x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := fastRecord(b, interner{})
		if !ok {
			return
		}
		var std snapRecord
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("%s: fast decode took it, encoding/json says %v", b, err)
		}
		if !reflect.DeepEqual(fast, std) {
			t.Fatalf("%s:\nfast %+v %+v %+v\nstd  %+v %+v %+v", b, fast, fast.Decision, fast.Tombstone, std, std.Decision, std.Tombstone)
		}
	})
}

// appendRecord writes exactly what json.Encoder writes for a decision or
// tombstone record, or declines.
func FuzzSnapshotLineEncode(f *testing.F) {
	f.Add(int64(3), []byte{1, 2}, int64(0), "CAPI", "ban", "Ip", "1.2.3.4", "crowdsecurity/ssh-bf", false, int64(1), int64(2), uint64(4), uint64(0))
	f.Add(int64(-3), []byte{}, int64(9), "c<", "b\"", "I\\", "caf\u00e9", "\xff", true, int64(-1), int64(1<<62), uint64(1<<63), uint64(7))
	f.Fuzz(func(t *testing.T, id int64, u []byte, alert int64, origin, typ, scope, value, scenario string, sim bool,
		created, until int64, ci, di uint64) {
		d := &Decision{ID: id, AlertID: alert, Origin: origin, Type: typ, Scope: scope, Value: value, Scenario: scenario,
			Simulated: sim, CreatedAt: created, Until: until, CreatedIndex: ci, DeletedIndex: di}
		copy(d.UUID[:], u)
		for _, key := range []string{"decision", "tombstone"} {
			got, ok := appendRecord(nil, key, d)
			if !ok {
				continue
			}
			var want bytes.Buffer
			rec := snapRecord{Decision: d}
			if key == "tombstone" {
				rec = snapRecord{Tombstone: d}
			}
			if err := json.NewEncoder(&want).Encode(rec); err != nil {
				t.Fatal(err)
			}
			if string(got) != want.String() {
				t.Fatalf("appendRecord:\n%s\njson.Encoder:\n%s", got, want.String())
			}
		}
	})
}

// encodeBody writes an ImportDecisions body exactly as json.Marshal does.
func FuzzImportEncode(f *testing.F) {
	f.Add(int64(0), "s", int64(3), "CAPI", "ban", "Ip", "1.2.3.4", "x", false, int64(1), uint64(0), 2)
	f.Add(int64(7), "<&>", int64(-3), "c\"", "b\\", "I", "caf\u00e9", "\xff", true, int64(1<<62), uint64(9), 0)
	f.Add(int64(7), "", int64(1), "", "", "", "", "", false, int64(0), uint64(0), -1)
	f.Fuzz(func(t *testing.T, alertID int64, scenario string, id int64, origin, typ, scope, value, sc string, sim bool,
		until int64, di uint64, n int) {
		b := ImportDecisions{AlertID: alertID, Alert: Alert{Scenario: scenario, Meta: []KV{{Key: scenario, Value: value}}}}
		if n >= 0 {
			b.Decisions = []Decision{}
		}
		for i := 0; i < n%4; i++ {
			d := Decision{ID: id + int64(i), AlertID: alertID, Origin: origin, Type: typ, Scope: scope, Value: value,
				Scenario: sc, Simulated: sim, CreatedAt: id, Until: until, CreatedIndex: uint64(i), DeletedIndex: di}
			if i%2 == 1 {
				d.UUID = UUID{byte(i), 1, 2}
			}
			b.Decisions = append(b.Decisions, d)
		}
		for _, body := range []any{b, &b} {
			got, err := encodeBody(body)
			want, werr := json.Marshal(body)
			if (err == nil) != (werr == nil) || string(got) != string(want) {
				t.Fatalf("encodeBody:\n%s (%v)\njson.Marshal:\n%s (%v)", got, err, want, werr)
			}
		}
	})
}

// fastImportList, when it takes a body, decodes it as encoding/json does
// (and only bodies encoding/json accepts).
func FuzzImportListJSON(f *testing.F) {
	for _, s := range []string{
		`{"alert":{"id":0,"scenario":"update : +1/-0 IPs","source":{"scope":"lists:x","value":""}},"origin":"lists","type":"ban","scope":"ip","scenario":"x","until":5,"seed":"0b5a7a2c-3e9f-4d1e-9c3a-5f2e8d7c6b1a","values":["1.2.3.4","10.0.0.0/8"]}`,
		`{"alert_id":7,"values":[],"untils":[1,-2]}`, `{"values":null}`, `{}`, ` { "values" : [ "a" , "b" ] } `,
		`{"values":["caf\u00e9"]}`, `{"Values":["x"]}`, `{"values":[1]}`, `{"untils":[1.5]}`, `{"untils":[01]}`,
		`{"alert_id":1,"alert_id":-2}`, `{"values":[],"values":["a"]}`, `{"seed":"zz"}`, `{"seed":null}`,
		`{"alert":{"meta":[{"key":"a","value":"b\"]}"}]},"alert_id":1}`, `{"alert":{"id":1}}}`, `{"alert":tru}`,
		`{"until":9223372036854775807,"untils":[-9223372036854775808]}`, `{"until":9223372036854775808}`,
		`{"values":["a",]}`, `{"values":["a"]`, `[]`, `null`, `{"x":[]}`, `{"origin":"a"}x`, `{"type":"\u0041"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := fastImportList(b)
		if !ok {
			return
		}
		var std ImportList
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("%s: fast decode took it, encoding/json says %v", b, err)
		}
		if !reflect.DeepEqual(*fast, std) {
			t.Fatalf("%s:\nfast %+v\nstd  %+v", b, *fast, std)
		}
	})
}

// A big list decodes through the fast path, as encoding/json decodes it.
func TestImportListFastPathTakesBigList(t *testing.T) {
	l := ImportList{Origin: "lists", Type: "ban", Scope: "ip", Scenario: "s", Until: 9, Seed: UUIDAt(UUID{1}, 0)}
	for i := range 20000 {
		l.Values = append(l.Values, fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255))
		l.Untils = append(l.Untils, int64(i))
	}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	fast, ok := fastImportList(b)
	if !ok {
		t.Fatal("the fast path refused the form halapi writes")
	}
	if !reflect.DeepEqual(*fast, l) {
		t.Fatal("the fast path decoded another list")
	}
}
