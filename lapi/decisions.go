package lapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/models"
)

func splitList(v string, norm func(string) string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if norm != nil {
			p = norm(p)
		}
		out = append(out, p)
	}
	return out
}

func parseIPFilter(v string) (*fsm.IPRange, error) {
	r, err := fsm.ParseRange(v)
	if err != nil {
		return nil, fmt.Errorf("unable to convert '%s' to int: invalid ip address '%s': invalid ip address / range", v, v)
	}
	return &r, nil
}

// bouncerFilter parses the filters of GET /v1/decisions and the stream;
// unknown keys are ignored as in CrowdSec.
func bouncerFilter(q url.Values, stream bool) (*fsm.DecisionFilter, error) {
	f := &fsm.DecisionFilter{Contains: true}
	var scopeLists [][]string
	for k, vs := range q {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch k {
		case "scope", "scopes":
			scopeLists = append(scopeLists, splitList(v, models.NormalizeScope))
		case "value":
			f.Value = v
		case "type":
			f.Type = v
		case "origins":
			f.Origins = splitList(v, nil)
		case "scenarios_containing":
			f.ScenariosContaining = splitList(strings.ToLower(v), nil)
		case "scenarios_not_containing":
			f.ScenariosNot = splitList(strings.ToLower(v), nil)
		case "ip", "range":
			r, err := parseIPFilter(v)
			if err != nil {
				return nil, err
			}
			f.IP = r
		case "contains":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("invalid contains value: %s", err)
			}
			f.Contains = b
		case "simulated":
			f.IncludeSimulated = v != "false"
		case "limit", "offset", "id_gt":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("invalid %s value: %s: invalid filter", k, err)
			}
			switch k {
			case "limit":
				f.Limit = int(n)
			case "offset":
				f.Offset = int(n)
			default:
				f.IDGt = n
			}
		}
	}
	if _, ok := q["scopes"]; stream && !ok {
		scopeLists = append(scopeLists, []string{models.ScopeIP, models.ScopeRange})
	}
	if len(scopeLists) > 0 {
		f.Scopes = scopeLists[0]
		for _, l := range scopeLists[1:] {
			var keep []string
			for _, s := range f.Scopes {
				if slices.Contains(l, s) {
					keep = append(keep, s)
				}
			}
			f.Scopes = keep
		}
		if f.Scopes == nil {
			f.Scopes = []string{"\x00none"}
		}
	}
	return f, nil
}

func (s *Server) getDecisions(w http.ResponseWriter, r *http.Request) {
	f, err := bouncerFilter(r.URL.Query(), false)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	now := s.now()
	ds := s.fsm.Decisions(f, now)
	s.metrics.decisionsAnswered(bouncerOf(r).Name, len(ds))
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	b := bouncerOf(r)
	if b.LastPull == 0 || now.UnixNano()-b.LastPull >= int64(time.Minute) {
		s.touches.bouncer(b.Name, fsm.StreamCursor{LastPull: now.UnixNano()})
	}
	n := now.UnixNano()
	writeStreamed(w, r, len(ds), func(e *chunkEncoder) {
		e.decisions(ds, n, false)
	})
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	q := r.URL.Query()
	f, err := bouncerFilter(q, true)
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	if q.Get("dedup") == "false" {
		f.NoDedup = true
	}
	startup := len(q["startup"]) > 0 && q["startup"][0] == "true"
	b := bouncerOf(r)
	cur := s.touches.cursor(b)
	if startup || (cur.Index == 0 && cur.LastPull == 0) {
		// The whole list: shared by every request with the same filters
		// (streamcache.go).
		s.streamStartup(w, r, f, b.Name)
		return
	}
	if cur.Index > s.fsm.AppliedIndex() {
		// The bouncer was last served by a node that is further ahead
		// (it moved here): answering before catching up could skip
		// decisions created between the two indexes.
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		err := s.fsm.WaitForIndex(ctx, cur.Index)
		cancel()
		if err != nil {
			writeRaw(w, http.StatusOK, []byte(`{"deleted":null,"new":null}`))
			return
		}
	}
	now := s.now()
	newD, deleted, index := s.fsm.Stream(f, cur, false, now)
	n := now.UnixNano()
	ok := writeStreamed(w, r, len(newD)+len(deleted), func(e *chunkEncoder) {
		e.stream(deleted, newD, n)
	})
	if ok {
		// A delta that did not reach the bouncer must be sent again.
		s.touches.bouncer(b.Name, fsm.StreamCursor{Index: index, LastPull: n})
	}
}

// fieldCache encodes decisions for one bouncer answer (the only place
// that reads a decision's fields for them). It keeps the encoded bytes of
// the fields that repeat from one decision to the next — the remaining
// duration (rounded to the second: a whole import expires within a few
// seconds) and origin, scenario, scope and type (interned: comparing them
// is a pointer check) — and re-encodes them only when they change. The
// output is exactly the field-by-field encoding
// (TestFieldCacheSameBytes, TestStreamGolden). The zero value is ready.
type fieldCache struct {
	dur   time.Duration
	durOK bool
	durB  []byte // {"duration":"...","id":

	origin, scenario, scope, typ string
	midOK                        bool
	midB                         []byte // ,"origin":...,"scenario":...,"scope":...,"type":...

	// first backing arrays: a small answer (a delta, a live query)
	// allocates nothing more than before
	durArr [40]byte
	midArr [160]byte
}

// appendDecision encodes one decision as a JSON object.
func (c *fieldCache) appendDecision(buf []byte, d *fsm.Decision, now int64, withUUID bool) []byte {
	if rd := time.Duration(d.Until - now).Round(time.Second); !c.durOK || rd != c.dur {
		c.dur, c.durOK = rd, true
		if c.durB == nil {
			c.durB = c.durArr[:0]
		}
		c.durB = append(c.durB[:0], `{"duration":"`...)
		c.durB = appendRemaining(c.durB, d.Until, now)
		c.durB = append(c.durB, `","id":`...)
	}
	buf = append(buf, c.durB...)
	buf = strconv.AppendInt(buf, d.ID, 10)
	if !c.midOK || d.Origin != c.origin || d.Scenario != c.scenario || d.Scope != c.scope || d.Type != c.typ {
		c.origin, c.scenario, c.scope, c.typ, c.midOK = d.Origin, d.Scenario, d.Scope, d.Type, true
		if c.midB == nil {
			c.midB = c.midArr[:0]
		}
		c.midB = append(c.midB[:0], `,"origin":`...)
		c.midB = appendString(c.midB, d.Origin)
		c.midB = append(c.midB, `,"scenario":`...)
		c.midB = appendString(c.midB, d.Scenario)
		c.midB = append(c.midB, `,"scope":`...)
		c.midB = appendString(c.midB, d.Scope)
		c.midB = append(c.midB, `,"type":`...)
		c.midB = appendString(c.midB, d.Type)
	}
	buf = append(buf, c.midB...)
	if withUUID && !d.UUID.IsZero() {
		buf = append(buf, `,"uuid":"`...)
		buf, _ = d.UUID.AppendText(buf)
		buf = append(buf, '"')
	}
	buf = append(buf, `,"value":`...)
	buf = appendString(buf, d.Value)
	return append(buf, '}')
}

// appendRemaining appends the time left rounded to the second, as Go's
// Duration.String writes it ("1h0m0s", "59s", "-2s"), without allocating.
func appendRemaining(buf []byte, until, now int64) []byte {
	d := time.Duration(until - now).Round(time.Second)
	if d%time.Second != 0 { // Round saturated at the int64 bounds
		return append(buf, d.String()...)
	}
	sec := int64(d / time.Second)
	if sec == 0 {
		return append(buf, '0', 's')
	}
	if sec < 0 {
		buf = append(buf, '-')
		sec = -sec
	}
	if sec >= 3600 {
		buf = strconv.AppendInt(buf, sec/3600, 10)
		buf = append(buf, 'h')
		sec %= 3600
		buf = strconv.AppendInt(buf, sec/60, 10)
		buf = append(buf, 'm')
		sec %= 60
	} else if sec >= 60 {
		buf = strconv.AppendInt(buf, sec/60, 10)
		buf = append(buf, 'm')
		sec %= 60
	}
	buf = strconv.AppendInt(buf, sec, 10)
	return append(buf, 's')
}

const hexDigits = "0123456789abcdef"

// plainJSON marks the bytes a JSON string holds as they are: printable
// ASCII except '"', '\\' and the HTML-sensitive '<', '>', '&' (escaped
// as encoding/json does), and every byte >= 0x80 (UTF-8 passes through).
var plainJSON = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	i := 0
	for i < len(s) && plainJSON[s[i]] {
		i++
	}
	if i == len(s) { // the usual case: nothing to escape
		buf = append(buf, s...)
		return append(buf, '"')
	}
	start := 0
	for ; i < len(s); i++ {
		c := s[i]
		if plainJSON[c] {
			continue
		}
		buf = append(buf, s[start:i]...)
		switch c {
		case '"', '\\':
			buf = append(buf, '\\', c)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// deleteFilter parses DELETE /v1/decisions parameters (lapi.md §4.10).
func deleteFilter(q url.Values) (*fsm.DecisionFilter, error) {
	f := &fsm.DecisionFilter{Contains: true, IncludeSimulated: true}
	for k, vs := range q {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		switch k {
		case "ip", "range":
			r, err := parseIPFilter(v)
			if err != nil {
				return nil, err
			}
			f.IP = r
		case "contains":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("invalid contains value: %s", err)
			}
			f.Contains = b
		case "scopes":
			f.Scopes = []string{v}
		case "scope":
			// Not accepted by the reference (cscli --scope fails there);
			// accepted here as the normalised alias.
			f.Scopes = []string{models.NormalizeScope(v)}
		case "value":
			f.Value = v
		case "type":
			f.Type = v
		case "origin":
			f.Origins = []string{v}
		case "scenario":
			f.Scenario = v
		case "uuid":
			f.UUIDs = vs
		default:
			return nil, fmt.Errorf("'%s' doesn't exist: invalid filter", k)
		}
	}
	return f, nil
}

func (s *Server) deleteDecisions(w http.ResponseWriter, r *http.Request) {
	f, err := deleteFilter(r.URL.Query())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err.Error())
		return
	}
	// The filter is evaluated by the FSM when the entry is applied: a
	// node's local copy may lag, and deciding "nothing to delete" on it
	// would lose the delete.
	key, err := idemKey(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	res, err := s.applyKeyed(r.Context(), commandID(r, key, "decisions-delete", 0), fsm.CmdDecisionsExpire, fsm.DecisionsExpire{Filter: f})
	if err != nil {
		s.writeApplyErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"nbDeleted": strconv.Itoa(res.N)})
}

func (s *Server) deleteDecision(w http.ResponseWriter, r *http.Request) {
	raw := mux.Vars(r)["decision_id"]
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		writeErr(w, http.StatusBadRequest, "decision_id must be valid integer")
		return
	}
	key, err := idemKey(r)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	res, err := s.applyKeyed(r.Context(), commandID(r, key, "decision-delete", 0), fsm.CmdDecisionsExpire, fsm.DecisionsExpire{IDs: []int64{id}, MustExist: true})
	if errors.Is(err, fsm.ErrNotFound) {
		writeErr(w, http.StatusInternalServerError, fmt.Sprintf("decision with id '%d' doesn't exist: unable to delete", id))
		return
	}
	if err != nil {
		s.writeApplyErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"nbDeleted": strconv.Itoa(res.N)})
}

// remaining is the time left rounded to the second, as a Go duration.
func remaining(until, now int64) string {
	return time.Duration(until - now).Round(time.Second).String()
}
