package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/halapi/halapi/capi/capitest"
	"gopkg.in/yaml.v3"
)

// capi enroll / capi status / capi credentials against a node whose CAPI
// is the fake.
func TestCAPIEnrollAndCredentialsCLI(t *testing.T) {
	fake := capitest.New()
	defer fake.Close()
	fake.AddWatcher("lapi-cli", "pw-lapi-cli")
	credsIn := filepath.Join(t.TempDir(), "online_api_credentials.yaml")
	if err := os.WriteFile(credsIn, []byte("url: "+fake.BaseURL()+"\nlogin: lapi-cli\npassword: pw-lapi-cli\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir, _ := startNode(t, "--capi-credentials", credsIn)
	// wait until the leader imported the credentials
	deadline := time.Now().Add(15 * time.Second)
	for {
		var st map[string]any
		if json.Unmarshal([]byte(mustRun(t, "capi", "status", "--data-dir", dir, "-o", "json")), &st) == nil && st["login"] == "lapi-cli" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("credentials not imported")
		}
		time.Sleep(50 * time.Millisecond)
	}

	fake.Script(capitest.Enroll, capitest.Response{Status: 201, Body: `{"message":"OK"}`})
	out := mustRun(t, "capi", "enroll", "my-key", "--name", "prod-cluster", "--tags", "eu,web", "--data-dir", dir)
	if !strings.Contains(out, "successfully enrolled") {
		t.Fatalf("enroll: %q", out)
	}
	var body struct {
		Key       string   `json:"attachment_key"`
		Name      string   `json:"name"`
		Tags      []string `json:"tags"`
		Overwrite bool     `json:"overwrite"`
	}
	reqs := fake.Requests(capitest.Enroll)
	if len(reqs) != 1 || json.Unmarshal(reqs[0].Body, &body) != nil || body.Key != "my-key" || body.Name != "prod-cluster" ||
		strings.Join(body.Tags, ",") != "eu,web" || body.Overwrite {
		t.Fatalf("enroll sent %d requests: %s", len(reqs), reqs[0].Body)
	}
	if out := mustRun(t, "capi", "status", "--data-dir", dir); !strings.Contains(out, "Console enrollment") ||
		!strings.Contains(out, "enrolled at") || !strings.Contains(out, "name prod-cluster") {
		t.Fatalf("status lacks the enrollment:\n%s", out)
	}
	// already enrolled (200 without --overwrite): a warning, exit 0
	fake.Script(capitest.Enroll, capitest.Response{Status: 200, Body: `{"message":"OK"}`})
	if out := mustRun(t, "capi", "enroll", "my-key", "--data-dir", dir); !strings.Contains(out, "already enrolled") {
		t.Fatalf("second enroll: %q", out)
	}
	// a refused key: one line, non-zero exit
	refused := capitest.Response{Status: 403, Body: `{"message":"invalid attachment key"}`}
	fake.Script(capitest.Enroll, refused, refused, refused)
	if _, errs, err := run(t, "capi", "enroll", "bad-key", "--data-dir", dir); err == nil || !strings.Contains(errs, "403") ||
		strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("refused enroll: %v %q", err, errs)
	}

	// credentials export: CrowdSec's file, mode 0600
	file := filepath.Join(t.TempDir(), "out.yaml")
	mustRun(t, "capi", "credentials", "-o", file, "--data-dir", dir)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cf map[string]string
	if err := yaml.Unmarshal(b, &cf); err != nil || cf["url"] != fake.BaseURL() || cf["login"] != "lapi-cli" || cf["password"] != "pw-lapi-cli" || len(cf) != 3 {
		t.Fatalf("credentials file %q: %v", b, err)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode %v", st.Mode())
	}
	if out := mustRun(t, "capi", "credentials", "--data-dir", dir); out != string(b) {
		t.Fatalf("stdout %q, file %q", out, b)
	}
}
