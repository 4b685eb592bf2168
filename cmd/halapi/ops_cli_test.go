package main

import (
	"encoding/json"
	"fmt"
	"os"
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

// Flags read as what to type: no Go type names, no "[=true|false]", no
// placeholder made of a quoted command; flags still parse.
func TestHelpPlaceholders(t *testing.T) {
	for _, args := range [][]string{{"serve", "--help"}, {"machines", "add", "--help"}, {"cluster", "recover", "--help"}, {"cert", "revoke", "--help"}} {
		out := mustRun(t, args...)
		for _, bad := range []string{" string ", " strings ", " stringArray ", " duration ", " uint ", "[=true|false]", "--join-token halapi"} {
			if strings.Contains(out, bad) {
				t.Errorf("halapi %v help shows %q:\n%s", args, bad, out)
			}
		}
	}
	serve := mustRun(t, "serve", "--help")
	for _, want := range []string{"--data-dir DIR", "--listen HOST:PORT", "--join-token TOKEN", "--join-token-file FILE", "--trusted-ips CIDR,...",
		"--jwt-ttl DURATION", "--bootstrap-expect N", "--capi-pull-community ", "turn off with --capi-pull-community=false"} {
		if !strings.Contains(serve, want) {
			t.Errorf("serve --help lacks %q", want)
		}
	}
	// bools still parse with and without a value, typed flags still check
	if _, errs, err := run(t, "machines", "add", "x", "--force=false", "--auto", "--data-dir", t.TempDir()); err == nil || !strings.Contains(errs, "no running halapi node") {
		t.Fatalf("bool flags: %v %q", err, errs)
	}
	if _, errs, err := run(t, "serve", "--jwt-ttl", "soon"); err == nil || !strings.Contains(errs, "invalid argument") {
		t.Fatalf("a bad duration: %v %q", err, errs)
	}
}

func TestJoinTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := func(content string) string {
		p := filepath.Join(dir, fmt.Sprintf("tok%d", len(content)))
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f := pkiFlags{joinTokenFile: file("abc.def\n")}
	if err := f.readJoinTokenFile(nil); err != nil || f.joinToken != "abc.def" {
		t.Fatalf("file: %q %v", f.joinToken, err)
	}
	f = pkiFlags{joinTokenFile: "-"}
	if err := f.readJoinTokenFile(strings.NewReader("  tok-from-stdin \n")); err != nil || f.joinToken != "tok-from-stdin" {
		t.Fatalf("stdin: %q %v", f.joinToken, err)
	}
	for name, fl := range map[string]pkiFlags{
		"both":     {joinToken: "x", joinTokenFile: file("y")},
		"empty":    {joinTokenFile: file(" \n")},
		"two":      {joinTokenFile: file("a\nb\n")},
		"missing":  {joinTokenFile: filepath.Join(dir, "nope")},
		"too long": {joinTokenFile: file(strings.Repeat("a", maxTokenFile+1))},
	} {
		if err := fl.readJoinTokenFile(strings.NewReader("")); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A node joins with its token on stdin (never on its command line); the
// CLI's error and list polish on a secure cluster.
func TestOpsCLIPolish(t *testing.T) {
	n1, n2 := newSecureNode(t, "n1"), newSecureNode(t, "n2")
	n1.start(t)
	caFile := filepath.Join(n1.dir, "pki", "ca.crt")
	waitFor(t, "n1 CA on disk", func() bool { _, err := os.Stat(caFile); return err == nil })
	anon := httpsClient(t, caFile, "", "")
	waitHTTPS(t, anon, "https://"+n1.api+"/health")

	tok := strings.TrimSpace(mustRun(t, "cluster", "token", "--data-dir", n1.dir))
	n2.cmdStdin = strings.NewReader(tok + "\n")
	n2.start(t, "--join", n1.gossip, "--join-token-file", "-", "--join-api", n1.api)
	waitHTTPS(t, anon, "https://"+n2.api+"/health")
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n2.cmd.Process.Pid))
	if err == nil && strings.Contains(string(cmdline), tok) {
		t.Fatal("the join token is on the node's command line")
	}
	waitFor(t, "n2 to be a voter", func() bool {
		return strings.Count(mustRun(t, "cluster", "status", "--data-dir", n1.dir, "-o", "json"), `"role": "follower"`) == 1
	})

	// cert revoke of an unknown name: exit 1, one line
	_, errs, err := run(t, "cert", "revoke", "--name", "nosuch", "--data-dir", n1.dir)
	if err == nil || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, `"nosuch"`) {
		t.Fatalf("revoke --name nosuch: %v %q", err, errs)
	}

	// bouncers list marks a bouncer whose certificate is revoked
	out := t.TempDir()
	mustRun(t, "cert", "issue", "bouncer", "fw1", "--out", out, "--data-dir", n1.dir)
	bouncer := httpsClient(t, filepath.Join(out, "ca.crt"), filepath.Join(out, "fw1.crt"), filepath.Join(out, "fw1.key"))
	if c := status(bouncer, "https://"+n1.api+"/v1/decisions"); c != 200 {
		t.Fatalf("bouncer cert: %d", c)
	}
	mustRun(t, "bouncers", "add", "keyed", "--key", "k-polish-0123456789", "--data-dir", n1.dir)
	if l := mustRun(t, "bouncers", "list", "--data-dir", n1.dir); strings.Contains(l, "revoked") {
		t.Fatalf("a valid certificate shown revoked:\n%s", l)
	}
	mustRun(t, "cert", "revoke", "--name", "fw1", "--data-dir", n1.dir)
	var rows []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "bouncers", "list", "--data-dir", n2.dir, "-o", "json")), &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if want := strings.HasPrefix(r["name"].(string), "fw1@"); (r["cert_revoked"] == true) != want {
			t.Fatalf("bouncers list -o json: %v", rows)
		}
	}
	for _, line := range strings.Split(mustRun(t, "bouncers", "list", "--data-dir", n1.dir), "\n") {
		if strings.HasPrefix(line, "fw1@") != strings.Contains(line, "certificate revoked") {
			t.Fatalf("bouncers list line %q", line)
		}
	}

	// machines add of an existing name suggests --force, which works
	mustRun(t, "machines", "add", "ag", "--password", "pw-1", "--data-dir", n1.dir)
	_, errs, err = run(t, "machines", "add", "ag", "--password", "pw-2", "--data-dir", n1.dir)
	if err == nil || strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.Contains(errs, "--force") {
		t.Fatalf("duplicate machine: %v %q", err, errs)
	}
	mustRun(t, "machines", "add", "ag", "--password", "pw-2", "--force", "--data-dir", n1.dir)

	// allowlists list: a human table, JSON on request
	if l := mustRun(t, "allowlists", "list", "--data-dir", n1.dir); !strings.Contains(l, "No allowlists") {
		t.Fatalf("empty allowlists list: %q", l)
	}
	mustRun(t, "allowlists", "create", "office", "-d", "office network", "--data-dir", n1.dir)
	mustRun(t, "allowlists", "add", "office", "10.1.0.0/16", "192.0.2.1", "-d", "vpn", "--data-dir", n1.dir)
	l := mustRun(t, "allowlists", "list", "--data-dir", n1.dir)
	for _, want := range []string{"NAME", "office", "office network", "10.1.0.0/16", "192.0.2.1", "vpn", "never"} {
		if !strings.Contains(l, want) {
			t.Fatalf("allowlists list lacks %q:\n%s", want, l)
		}
	}
	if strings.HasPrefix(strings.TrimSpace(l), "[") {
		t.Fatalf("allowlists list is JSON by default:\n%s", l)
	}
	var als []map[string]any
	if err := json.Unmarshal([]byte(mustRun(t, "allowlists", "list", "-o", "json", "--data-dir", n1.dir)), &als); err != nil || len(als) != 1 {
		t.Fatalf("allowlists list -o json: %v %v", als, err)
	}
}
