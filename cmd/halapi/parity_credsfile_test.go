package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

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
