package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/fsm"
)

func TestPlainRemoteURL(t *testing.T) {
	for u, want := range map[string]bool{
		"http://0.0.0.0:8080/":    true,
		"http://10.0.0.5:8080/":   true,
		"http://lapi.example:80/": true,
		"http://[::]:8080/":       true,
		"http://127.0.0.1:8080/":  false,
		"http://[::1]:8080/":      false,
		"http://localhost:8080/":  false,
		"https://0.0.0.0:8080/":   false,
		"":                        false,
	} {
		if got := PlainRemoteURL(u); got != want {
			t.Errorf("%q: %v, want %v", u, got, want)
		}
	}
	w := memberWarnings([]Member{{ID: "a", APIURL: "https://10.0.0.1:1/"}, {ID: "b", APIURL: "http://10.0.0.1:1/"}})
	if len(w) != 1 || w[0][:2] != "b " {
		t.Fatalf("warnings %q", w)
	}
}

func TestWildcardURL(t *testing.T) {
	for u, want := range map[string]bool{
		"http://0.0.0.0:8080/":    true,
		"https://[::]:8080/":      true,
		"https://:8080/":          true,
		"https://10.0.0.5:8080/":  false,
		"https://lapi.example/":   false,
		"https://127.0.0.1:8080/": false,
		"":                        false,
		"https://[::1]:80/":       false,
	} {
		if got := WildcardURL(u); got != want {
			t.Errorf("%q: %v, want %v", u, got, want)
		}
	}
}

// TestStatusWarnsPlainHTTPRemote: a node whose API URL is plain http off
// loopback, or a wildcard address, is named in Status.Warnings (cluster
// status and its JSON).
func TestStatusWarnsPlainHTTPRemote(t *testing.T) {
	for url, want := range map[string][]string{
		"http://0.0.0.0:8080/":   {"n1 serves the LAPI over plain HTTP", "n1 advertises the API URL http://0.0.0.0:8080/, a wildcard address"},
		"http://10.0.0.1:8080/":  {"n1 serves the LAPI over plain HTTP"},
		"http://127.0.0.1:8080/": nil,
		"https://0.0.0.0:8080/":  {"n1 advertises the API URL https://0.0.0.0:8080/, a wildcard address"},
		"https://10.0.0.1:8080/": nil,
	} {
		n, err := Open(Config{NodeID: "n1", DataDir: t.TempDir(), APIURL: url}, fsm.New(nil))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := n.WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
		st := n.Status(ctx)
		cancel()
		n.Close()
		if len(st.Warnings) != len(want) {
			t.Errorf("%s: warnings %q, want %d", url, st.Warnings, len(want))
			continue
		}
		for i, w := range want {
			if !strings.Contains(st.Warnings[i], w) {
				t.Errorf("%s: warning %q, want it to say %q", url, st.Warnings[i], w)
			}
		}
	}
}
