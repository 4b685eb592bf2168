package lapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/fsm"
)

// A push retried with the same Idempotency-Key is stored once and answered
// with the first IDs; the same key from another machine, or without a key,
// is a new write.
func TestIdempotencyKeyDedupsAlertPush(t *testing.T) {
	e := newEnv(t)
	tokA, tokB := e.machine("agent-a"), e.machine("agent-b")
	body := []any{agentAlert("192.0.2.1", e.now())}
	key := withHeader(IdempotencyHeader, "0123456789abcdef-retry_1")

	var first, again, other, plain []string
	e.expect(e.do("POST", "/v1/alerts", body, withToken(tokA), key), 201).json(t, &first)
	e.expect(e.do("POST", "/v1/alerts", body, withToken(tokA), key), 201).json(t, &again)
	if strings.Join(first, ",") != strings.Join(again, ",") {
		t.Fatalf("retry answered %v, first attempt %v", again, first)
	}
	e.expect(e.do("POST", "/v1/alerts", body, withToken(tokB), key), 201).json(t, &other)
	e.expect(e.do("POST", "/v1/alerts", body, withToken(tokA)), 201).json(t, &plain)
	if other[0] == first[0] || plain[0] == first[0] || plain[0] == other[0] {
		t.Fatalf("distinct writes got the same alert IDs: first %v, other machine %v, no key %v", first, other, plain)
	}
	if n := len(e.fsm.Alerts(&fsm.AlertFilter{}, e.now())); n != 3 {
		t.Fatalf("%d alerts stored, want 3 (the retry must not be stored)", n)
	}
}

func TestIdempotencyKeyDedupsDecisionDelete(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("cscli")
	e.expect(e.do("POST", "/v1/alerts", []any{manualAlert("Ip", "192.0.2.7", "ban", "4h", e.now())}, withToken(tok)), 201)
	key := withHeader(IdempotencyHeader, "delete-0123456789abcdef")
	var a, b map[string]string
	e.expect(e.do("DELETE", "/v1/decisions?ip=192.0.2.7", nil, withToken(tok), key), 200).json(t, &a)
	e.expect(e.do("DELETE", "/v1/decisions?ip=192.0.2.7", nil, withToken(tok), key), 200).json(t, &b)
	if a["nbDeleted"] != "1" || b["nbDeleted"] != "1" {
		t.Fatalf("delete then retry answered %v and %v, want nbDeleted 1 both times", a, b)
	}
}

func TestIdempotencyKeyValidated(t *testing.T) {
	e := newEnv(t)
	tok := e.machine("agent-a")
	body := []any{agentAlert("192.0.2.1", e.now())}
	for _, k := range []string{"short", strings.Repeat("k", maxIdemKey+1), "0123456789abcdef/../x", "0123456789abcdef\x00zz", "0123456789 abcdef"} {
		r := e.expect(e.do("POST", "/v1/alerts", body, withToken(tok), withHeader(IdempotencyHeader, k)), http.StatusBadRequest)
		if !strings.Contains(r.body, `"message"`) {
			t.Fatalf("key %q: body %q has no message", k, r.body)
		}
	}
	r := e.do("POST", "/v1/alerts", body, withToken(tok), func(r *http.Request) {
		r.Header.Add(IdempotencyHeader, "0123456789abcdef-a")
		r.Header.Add(IdempotencyHeader, "0123456789abcdef-b")
	})
	e.expect(r, http.StatusBadRequest)
	if n := len(e.fsm.Alerts(&fsm.AlertFilter{}, e.now())); n != 0 {
		t.Fatalf("%d alerts stored from refused requests", n)
	}
}

type fakeStatus struct{ calls int }

func (f *fakeStatus) Status(context.Context) cluster.Status {
	f.calls++
	return cluster.Status{NodeID: "n1", Leader: "n2", Members: []cluster.Member{
		{ID: "n1", Role: "follower", State: "alive", APIURL: "https://10.0.0.1:8080/", RaftAddr: "10.0.0.1:7000"},
		{ID: "n2", Role: "leader", State: "alive", APIURL: "https://10.0.0.2:8080/", RaftAddr: "10.0.0.2:7000"},
		{ID: "n3", Role: "joining", State: "alive", APIURL: "ftp://x/"},
	}}
}

func TestMembersRouteNeedsACredential(t *testing.T) {
	e := newEnv(t)
	src := &fakeStatus{}
	tok := e.machine("agent-a")
	e.bouncer("fw", "bouncer-key-0123456789")
	e.h = e.srv.MembersHandler(src)

	e.expect(e.do("GET", MembersPath, nil), http.StatusForbidden)
	e.expect(e.do("GET", MembersPath, nil, withKey("wrong-key")), http.StatusForbidden)
	e.expect(e.do("GET", MembersPath, nil, withToken("not.a.jwt")), http.StatusUnauthorized)
	e.expect(e.do("POST", MembersPath, nil, withKey("bouncer-key-0123456789")), http.StatusMethodNotAllowed)

	var v MembersView
	r := e.expect(e.do("GET", MembersPath, nil, withKey("bouncer-key-0123456789")), 200)
	r.json(t, &v)
	if v.Leader != "n2" || len(v.Members) != 2 || v.Members[1].APIURL != "https://10.0.0.2:8080/" {
		t.Fatalf("members view %+v", v)
	}
	if strings.Contains(r.body, "7000") {
		t.Fatalf("members route exposes raft addresses: %s", r.body)
	}
	e.expect(e.do("GET", MembersPath, nil, withToken(tok)), 200)
	if src.calls != 1 {
		t.Fatalf("cluster asked %d times within the cache TTL, want 1", src.calls)
	}
	// a key lookup records nothing (no user agent or IP on the row)
	if b := e.fsm.Bouncer("fw"); b.IP != "" || b.Type != "" {
		t.Fatalf("members route wrote to the bouncer row: %+v", b)
	}
}
