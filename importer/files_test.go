package importer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ReadLocalFiles: the CAPI credentials go into the source, console.yaml
// and profiles.yaml are reported (present with a note, or not carried with
// the reason); Include adds that report without touching Applied.
func TestReadLocalFilesAndInclude(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := &Config{CredentialsPath: write("online.yaml", "url: https://api.crowdsec.net/\nlogin: l1\npassword: p1\n"),
		ConsolePath: write("console.yaml", "share_context: true\n"), ProfilesPath: write("profiles.yaml", "name: [\n")}
	var src Source
	extra := ReadLocalFiles(cfg, &src)
	if src.CAPI == nil || src.CAPI.Login != "l1" || src.CAPI.Password != "p1" {
		t.Fatalf("credentials: %+v", src.CAPI)
	}
	if len(extra.Skipped) != 1 || extra.Skipped[0].Kind != KindProfiles || !strings.Contains(extra.Skipped[0].Reason, "does not load") {
		t.Fatalf("skipped: %+v", extra.Skipped)
	}
	if len(extra.Notes) != 1 || !strings.Contains(extra.Notes[0], "--console-share-context=true") {
		t.Fatalf("notes: %q", extra.Notes)
	}
	rep := Report{Applied: true}
	rep.Sort()
	rep.Include(extra)
	if !rep.Applied || rep.count(KindConsole).Present != 1 || rep.count(KindProfiles).NotCarried != 1 || len(rep.Notes) != 1 {
		t.Fatalf("included: %+v", rep)
	}
	rep.Merge(Report{})
	if rep.Applied {
		t.Fatal("Merge with an unapplied part must clear Applied")
	}

	cfg.CredentialsPath = filepath.Join(dir, "missing.yaml")
	src = Source{}
	if extra := ReadLocalFiles(cfg, &src); src.CAPI != nil || extra.count(KindCAPI).NotCarried != 1 {
		t.Fatalf("missing credentials: %+v %+v", src.CAPI, extra)
	}
}
