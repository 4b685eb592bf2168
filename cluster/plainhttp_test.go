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
	w := memberWarnings([]Member{{ID: "a", APIURL: "https://0.0.0.0:1/"}, {ID: "b", APIURL: "http://0.0.0.0:1/"}})
	if len(w) != 1 || w[0][:2] != "b " {
		t.Fatalf("warnings %q", w)
	}
}

// TestStatusWarnsPlainHTTPRemote: a node whose API URL is plain http off
// loopback is named in Status.Warnings (cluster status and its JSON).
func TestStatusWarnsPlainHTTPRemote(t *testing.T) {
	for url, want := range map[string]int{"http://0.0.0.0:8080/": 1, "http://127.0.0.1:8080/": 0, "https://0.0.0.0:8080/": 0} {
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
		if len(st.Warnings) != want || (want == 1 && !strings.Contains(st.Warnings[0], "n1 serves the LAPI over plain HTTP")) {
			t.Errorf("%s: warnings %q", url, st.Warnings)
		}
	}
}
