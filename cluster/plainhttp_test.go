package cluster

import "testing"

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
