package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	out := mustRun(t, "version")
	for _, want := range []string{"halapi ", "commit:", runtime.Version(), "raft entry format: 2", "command types:", "extensions:"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
	if flag := mustRun(t, "--version"); flag != out {
		t.Errorf("--version differs from `version`:\n%s\nvs\n%s", flag, out)
	}
	var b buildInfo
	if err := json.Unmarshal([]byte(mustRun(t, "version", "-o", "json")), &b); err != nil {
		t.Fatal(err)
	}
	if b.GoVersion != runtime.Version() || b.EntryFormat != 2 || len(b.Commands) < 21 || b.Extensions == nil {
		t.Fatalf("version json: %+v", b)
	}
	// The Makefile's -ldflags win over the build info.
	bin := filepath.Join(t.TempDir(), "halapi")
	if o, err := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7 -X main.commit=feedc0ffee12", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, o)
	}
	o, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(o), "halapi v9.8.7\n") || !strings.Contains(string(o), "feedc0ffee12") {
		t.Fatalf("version with ldflags: %v\n%s", err, o)
	}
}
