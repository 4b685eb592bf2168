package ui

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkDecisionsPage50k renders the decisions page (first page, then
// a page deep in the list, then a search) of a node holding 50,000
// active decisions, through the whole handler (session, template).
func BenchmarkDecisionsPage50k(b *testing.B) {
	e := newEnv(b)
	e.addDecisions(50_000, "crowdsecurity/http-probing")
	br := e.browser()
	br.signIn()
	ck := br.cookies[CookieName]
	for _, c := range []struct{ name, path string }{
		{"first", "/ui/decisions"},
		{"page250", "/ui/decisions?page=250"},
		{"searchIP", "/ui/decisions?q=10.0.100.7"},
		{"searchScenario", "/ui/decisions?q=probing&page=100"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("GET", c.path, nil)
				req.AddCookie(ck)
				rec := httptest.NewRecorder()
				e.h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
			}
		})
	}
}
