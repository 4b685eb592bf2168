package lapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/halapi/halapi/fsm"
)

func TestRecordAuditStoresAndLists(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.NodeID = "n7" })
	ctx := context.Background()
	if err := e.srv.RecordAudit(ctx, "cert:alice", "decision.add", "1.2.3.4", "ban 4h"); err != nil {
		t.Fatal(err)
	}
	e.advance(2e9)
	// a form's free text: newlines, an escape sequence, invalid UTF-8,
	// far too long; the record is kept, as one bounded line
	detail := "first line\nsecond\x1b[2J\xff" + strings.Repeat("é", fsm.MaxAuditDetail)
	if err := e.srv.RecordAudit(ctx, "link:bob", "unban", "42", detail); err != nil {
		t.Fatal(err)
	}
	got := e.fsm.AuditLog(0)
	if len(got) != 2 {
		t.Fatalf("%d records", len(got))
	}
	if r := got[1]; r.Node != "n7" || r.Who != "cert:alice" || r.Action != "decision.add" || r.Target != "1.2.3.4" || r.Detail != "ban 4h" ||
		!r.Time.Equal(e.clock.Add(-2e9)) {
		t.Fatalf("first record %+v", r)
	}
	d := got[0].Detail
	if len(d) > fsm.MaxAuditDetail || !utf8.ValidString(d) || strings.ContainsAny(d, "\n\x1b") ||
		!strings.HasPrefix(d, "first line second [2J\uFFFDé") || !strings.HasSuffix(d, "…") {
		t.Fatalf("sanitized detail (%d bytes) = %.60q…", len(d), d)
	}

	// GET /audit: newest first, limited
	a := adminAPI(e.srv)
	get := func(q string) (int, []fsm.AuditRecord, string) {
		w := httptest.NewRecorder()
		a.ServeHTTP(w, httptest.NewRequest("GET", "/admin/v1/audit"+q, nil))
		var out []fsm.AuditRecord
		if w.Code == http.StatusOK {
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
		}
		return w.Code, out, w.Body.String()
	}
	if code, l, _ := get(""); code != 200 || len(l) != 2 || l[0].Who != "link:bob" {
		t.Fatalf("GET /audit = %d %+v", code, l)
	}
	if code, l, _ := get("?limit=1"); code != 200 || len(l) != 1 || l[0].Action != "unban" {
		t.Fatalf("GET /audit?limit=1 = %d %+v", code, l)
	}
	for _, q := range []string{"?limit=0", "?limit=-3", "?limit=x"} {
		if code, _, body := get(q); code != 400 || !strings.Contains(body, `"message"`) {
			t.Errorf("GET /audit%s = %d %s", q, code, body)
		}
	}
}

func TestRecordAuditRefusesEmptyIdentity(t *testing.T) {
	e := newEnv(t)
	for _, c := range [][2]string{{"", "unban"}, {"cert:alice", ""}, {" \n ", "unban"}} {
		if err := e.srv.RecordAudit(context.Background(), c[0], c[1], "", ""); err == nil {
			t.Errorf("RecordAudit(%q, %q) accepted", c[0], c[1])
		}
	}
	if n := e.fsm.AuditLen(); n != 0 {
		t.Fatalf("%d records stored", n)
	}
	// no node ID configured: the host name (never empty)
	if err := e.srv.RecordAudit(context.Background(), "w", "a", "", ""); err != nil {
		t.Fatal(err)
	}
	if l := e.fsm.AuditLog(1); len(l) != 1 || l[0].Node == "" {
		t.Fatalf("%+v", l)
	}
}
