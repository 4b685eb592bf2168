package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/gorilla/mux"
)

type auditRec struct{ who, action, target, detail string }

// The CLI's successful writes are recorded (who, route, variables, the
// allowed query parameters), reads and refused writes are not, and a
// failing audit write does not change the answer.
func TestAdminWritesAreAudited(t *testing.T) {
	var mu sync.Mutex
	var recs []auditRec
	fail := false
	audit := func(ctx context.Context, who, action, target, detail string) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("audit write without a deadline")
		}
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return errors.New("no leader")
		}
		recs = append(recs, auditRec{who, action, target, detail})
		return nil
	}
	dir := shortDir(t)
	srv, err := Listen(dir, HandlerWithAudit(nil, audit, func(r *mux.Router) {
		r.HandleFunc("/things/{name}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }).Methods("DELETE")
		r.HandleFunc("/things/{name}", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, http.StatusOK, "x") }).Methods("GET")
		r.HandleFunc("/things", func(w http.ResponseWriter, _ *http.Request) { WriteJSON(w, http.StatusCreated, "made") }).Methods("POST")
		r.HandleFunc("/refused", func(w http.ResponseWriter, _ *http.Request) { WriteError(w, http.StatusConflict, "exists") }).Methods("POST")
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()
	c, err := NewClient(dir)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Do("DELETE", "/things/"+url.PathEscape("a b/c"), url.Values{"reason": {"key compromise"}, "password": {"s3cret"}}, nil, nil))
	must(c.Do("GET", "/things/x", nil, nil, nil))
	var made string
	must(c.Do("POST", "/things", url.Values{"ip": {"1.2.3.4"}}, map[string]string{"password": "s3cret"}, &made))
	if err := c.Do("POST", "/refused", nil, nil, nil); err == nil {
		t.Fatal("refused write answered OK")
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if err := c.Do("POST", "/things", nil, nil, &made); err != nil || made != "made" {
		t.Fatalf("a failed audit write changed the answer: %v %q", err, made)
	}

	who := "cli"
	if runtime.GOOS == "linux" {
		who = fmt.Sprintf("cli:uid=%d", os.Geteuid())
	}
	want := []auditRec{
		{who, "DELETE /things/{name}", "name=a+b%2Fc", "reason=key+compromise"},
		{who, "POST /things", "", "ip=1.2.3.4"},
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(recs) != fmt.Sprint(want) {
		t.Fatalf("audit records\n got %q\nwant %q", recs, want)
	}
}

// Without an audit function HandlerWithAudit is Handler.
func TestAdminWithoutAudit(t *testing.T) {
	h := HandlerWithAudit(nil, nil, func(r *mux.Router) {
		r.HandleFunc("/x", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }).Methods("POST")
	})
	dir := shortDir(t)
	srv, err := Listen(dir, h)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()
	c, _ := NewClient(dir)
	if err := c.Do("POST", "/x", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}
