package pki

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fuzzCA is a bootstrapped CA on a fake two-replica raft (like newCluster,
// without a *testing.T).
func fuzzCA(f *testing.F) *CA {
	r := newReplicas(2)
	if err := Bootstrap(context.Background(), r.fsms[0], r, testOptions()); err != nil {
		f.Fatal(err)
	}
	a, err := New(r.fsms[0], r, testOptions())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = a.Close() })
	return a
}

// FuzzParseJoinToken: join tokens pasted on a command line.
func FuzzParseJoinToken(f *testing.F) {
	a := fuzzCA(f)
	tok, err := a.NewJoinToken(context.Background(), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add(" " + tok + "\n")
	f.Add(tok[:len(tok)-1])
	f.Add("")
	f.Add(strings.Repeat("A", 86))
	f.Fuzz(func(t *testing.T, s string) {
		fp, secret, err := ParseJoinToken(s)
		if err != nil {
			if fp != "" || secret != nil {
				t.Fatal("error with a result")
			}
			return
		}
		raw, herr := hex.DecodeString(fp)
		if herr != nil || len(raw) != fingerprintLen || len(secret) != joinSecretLen {
			t.Fatalf("fingerprint %q, secret of %d bytes", fp, len(secret))
		}
		// the parts are the token's bytes
		again := base64.RawURLEncoding.EncodeToString(append(raw, secret...))
		fp2, secret2, err := ParseJoinToken(again)
		if err != nil || fp2 != fp || !bytes.Equal(secret2, secret) {
			t.Fatalf("re-encoded token parses differently: %v", err)
		}
	})
}

// FuzzInspectToken: enrollment (one-time) tokens given to
// `halapi agent enroll`.
func FuzzInspectToken(f *testing.F) {
	a := fuzzCA(f)
	for _, role := range []Role{RoleAgent, RoleBouncer} {
		tok, err := a.NewToken("fw-1", role, time.Hour)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(tok)
	}
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJFUzI1NiJ9.e30.")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		info, err := InspectToken(s)
		if err != nil {
			if info != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if info.Subject == "" || len(info.Fingerprint) != 64 {
			t.Fatalf("accepted token without subject or fingerprint: %+v", info)
		}
	})
}

// FuzzJoinHandler: POST /join bodies from anyone who can reach the API
// (no other authentication). Never a panic or a 500, never a certificate
// without a valid unused token.
func FuzzJoinHandler(f *testing.F) {
	a := fuzzCA(f)
	h := a.JoinHandler()
	used, err := a.NewJoinToken(context.Background(), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	if _, _, _, _, err := a.RedeemJoin(context.Background(), used, "node2", nil); err != nil {
		f.Fatal(err)
	}
	seed := func(v any) {
		b, _ := json.Marshal(v)
		f.Add(b)
	}
	seed(joinRequest{Token: used, NodeID: "node3", SANs: []string{"10.0.0.3", "node3.lan"}}) // already used
	seed(joinRequest{Token: used, NodeID: "bad name"})
	seed(joinRequest{Token: used[:20], NodeID: "n"})
	seed(joinRequest{Token: strings.Repeat("A", 86), NodeID: "n"}) // another CA
	f.Add([]byte(`{"token":`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", JoinPath, bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 400 && w.Code != 403 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		var msg struct{ Message string }
		if err := json.Unmarshal(w.Body.Bytes(), &msg); err != nil || msg.Message == "" {
			t.Fatalf("%d without a message: %q", w.Code, w.Body)
		}
	})
}
