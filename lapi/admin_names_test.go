package lapi

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// A name the CLI escapes (url.PathEscape) reaches the handler as written:
// an allowlist with a space in its name can be deleted.
func TestAdminPathNamesUnescaped(t *testing.T) {
	e := newEnv(t)
	h := adminAPI(e.srv)
	call := func(method, path, body string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
		return w.Code
	}
	if c := call("POST", "/admin/v1/allowlists", `{"name":"office lan","description":"d"}`); c != 201 {
		t.Fatalf("create %d", c)
	}
	if c := call("POST", "/admin/v1/allowlists/office%20lan/items", `{"values":["10.0.0.0/8"]}`); c != 200 {
		t.Fatalf("add items %d", c)
	}
	if c := call("DELETE", "/admin/v1/allowlists/office%20lan", ""); c != 204 && c != 200 {
		t.Fatalf("delete %d", c)
	}
	if n := len(e.fsm.Allowlists()); n != 0 {
		t.Fatalf("%d allowlists left", n)
	}
}
