package profiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ReadFiles returns the overlay and the file as one YAML that Parse
// compiles to the same profiles, in the same order.
func TestReadFilesJoinsOverlay(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "profiles.yaml")
	base := "name: base\nfilters:\n - true\ndecisions:\n - type: ban\n   duration: 1h\n"
	local := "name: local\nfilters:\n - true\ndecisions:\n - type: captcha\n   duration: 2h" // no final newline
	if err := os.WriteFile(path, []byte(base), 0o600); err != nil {
		t.Fatal(err)
	}
	data, profs, err := ReadFiles(path)
	if err != nil || string(data) != base || len(profs) != 1 {
		t.Fatalf("without overlay: %q %d %v", data, len(profs), err)
	}
	if err := os.WriteFile(path+".local", []byte(local), 0o600); err != nil {
		t.Fatal(err)
	}
	data, profs, err = ReadFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(profs) != 2 || len(parsed) != 2 || profs[0].Name != "local" || parsed[0].Name != "local" ||
		parsed[1].Name != "base" || parsed[0].Decisions[0].Type != "captcha" {
		t.Fatalf("joined %q: profiles %v / %v", data, profs, parsed)
	}
	// errors name the file
	if err := os.WriteFile(path, []byte("name: x\nbogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadFiles(path); err == nil || !strings.Contains(err.Error(), "profiles.yaml: document 1") {
		t.Fatalf("error: %v", err)
	}
}
