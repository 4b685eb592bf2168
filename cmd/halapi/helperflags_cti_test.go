package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/halapi/halapi/lapi/profiles"
	"github.com/halapi/halapi/notify"
)

// The notification templates' CrowdsecCTI answers from the CTI the profile
// helpers use (--cti-key/--cti-url), and nil when the lookup fails.
func TestNotifyTemplatesShareTheProfilesCTI(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != "k" || r.URL.Path != "/smoke/192.0.2.9" {
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		_, _ = w.Write([]byte(`{"ip":"192.0.2.9","reputation":"malicious"}`))
	}))
	defer srv.Close()
	f := helperFlags{ctiKey: "k", ctiURL: srv.URL, ctiCacheTTL: profiles.DefaultCTICacheTTL, ctiCacheSize: 10}
	if err := f.configure(slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = profiles.Configure(profiles.HelperConfig{}); notify.CTIFunc = nil })
	it, ok := notify.CTIFunc("192.0.2.9").(*profiles.CTIItem)
	if !ok || it.Reputation != "malicious" {
		t.Fatalf("CrowdsecCTI in templates: %#v", notify.CTIFunc("192.0.2.9"))
	}
}
