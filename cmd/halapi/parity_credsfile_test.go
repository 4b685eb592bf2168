package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestAdvertisedAPIURL(t *testing.T) {
	for _, c := range []struct {
		scheme, listen string
		names          []string
		want           string
	}{
		{"https", "127.0.0.1:8080", nil, "https://127.0.0.1:8080/"},
		{"http", "127.0.0.5:9000", []string{"lapi.example"}, "http://127.0.0.5:9000/"},
		{"https", "0.0.0.0:8080", nil, "https://127.0.0.1:8080/"},
		{"https", ":8080", []string{"lapi.example", "10.0.0.1"}, "https://lapi.example:8080/"},
		{"https", "[::]:8080", []string{"*.example", "fd00::1"}, "https://[fd00::1]:8080/"},
		{"https", "[::1]:8443", nil, "https://[::1]:8443/"},
	} {
		if got := advertisedAPIURL(c.scheme, c.listen, c.names); got != c.want {
			t.Errorf("advertisedAPIURL(%s, %s, %v) = %s, want %s", c.scheme, c.listen, c.names, got, c.want)
		}
	}
}

// On a plain-HTTP node the file names http and no CA; -u still wins; a bad
// -u is refused before the machine exists.
func TestMachinesAddCredentialsFilePlain(t *testing.T) {
	dir, addr := startNode(t)
	out := filepath.Join(t.TempDir(), "creds.yaml")
	mustRun(t, "machines", "add", "a1", "--password", "p1", "--data-dir", dir, "-f", out)
	var c map[string]string
	b, _ := os.ReadFile(out)
	if err := yaml.Unmarshal(b, &c); err != nil || c["url"] != "http://"+addr+"/" || c["login"] != "a1" || c["password"] != "p1" || len(c) != 3 {
		t.Fatalf("credentials %q: %v", b, err)
	}
	mustRun(t, "machines", "add", "a2", "--data-dir", dir, "-f", out, "-u", "http://lapi.example:8080/")
	b, _ = os.ReadFile(out)
	if !strings.Contains(string(b), "url: http://lapi.example:8080/") {
		t.Fatalf("-u ignored: %q", b)
	}
	if _, errs, err := run(t, "machines", "add", "a3", "--data-dir", dir, "-f", out, "-u", "lapi:8080"); err == nil || !strings.Contains(errs, "invalid -u") {
		t.Fatalf("bad -u: %v %q", err, errs)
	}
	if list := mustRun(t, "machines", "list", "--data-dir", dir); strings.Contains(list, "a3") {
		t.Fatalf("machine created despite the bad -u:\n%s", list)
	}
}
