// Package dist holds the install and packaging artefacts (systemd unit,
// nfpm config, Dockerfile and compose file, Kubernetes manifest, Grafana
// dashboard); its tests validate them with the tools present.
package dist

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// The nfpm config: every packaged file exists in the repository (the
// binary is built by make package), destinations are absolute, the
// config file is not overwritten on upgrade, the scripts exist.
func TestNFPMConfig(t *testing.T) {
	var cfg struct {
		Name     string `yaml:"name"`
		Arch     string `yaml:"arch"`
		Version  string `yaml:"version"`
		License  string `yaml:"license"`
		Contents []struct {
			Src, Dst, Type string
			FileInfo       struct {
				Mode int `yaml:"mode"`
			} `yaml:"file_info"`
		} `yaml:"contents"`
		Scripts map[string]string `yaml:"scripts"`
	}
	readYAML(t, "nfpm.yaml", &cfg)
	if cfg.Name != "halapi" || cfg.Arch != "${GOARCH}" || cfg.Version != "${PKG_VERSION}" || cfg.License != "Apache-2.0" {
		t.Fatalf("nfpm.yaml header: %+v", cfg)
	}
	dsts := map[string]string{}
	for _, c := range cfg.Contents {
		if !filepath.IsAbs(c.Dst) {
			t.Errorf("destination %q is not absolute", c.Dst)
		}
		dsts[c.Dst] = c.Type
		if c.Src == "" || c.Src == "bin/package/halapi" {
			continue
		}
		if _, err := os.Stat(filepath.Join("..", c.Src)); err != nil {
			t.Errorf("packaged file %s: %v", c.Src, err)
		}
	}
	for _, want := range []string{"/usr/bin/halapi", "/usr/lib/systemd/system/halapi.service", "/etc/halapi/halapi.env", "/var/lib/halapi"} {
		if _, ok := dsts[want]; !ok {
			t.Errorf("the package lacks %s", want)
		}
	}
	if dsts["/etc/halapi/halapi.env"] != "config|noreplace" {
		t.Error("/etc/halapi/halapi.env must be config|noreplace (kept on upgrade)")
	}
	for _, s := range []string{"postinstall", "preremove"} {
		st, err := os.Stat(filepath.Join("..", cfg.Scripts[s]))
		if err != nil || st.Mode()&0o111 == 0 {
			t.Errorf("script %s (%s): %v", s, cfg.Scripts[s], err)
		}
	}
}

// The systemd unit runs as the halapi user with the hardening options,
// and systemd-analyze accepts it when it is installed.
func TestSystemdUnit(t *testing.T) {
	b, err := os.ReadFile("systemd/halapi.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"User=halapi", "ExecStart=/usr/bin/halapi serve --data-dir /var/lib/halapi $HALAPI_OPTS",
		"StateDirectory=halapi", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n", "PrivateTmp=yes",
		"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service", "UMask=0077", "KillSignal=SIGTERM"} {
		if !strings.Contains(unit, want) {
			t.Errorf("halapi.service lacks %q", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: unit syntax not verified")
		return
	}
	// verify wants the ExecStart binary to exist
	dir := t.TempDir()
	p := filepath.Join(dir, "halapi.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(unit, "/usr/bin/halapi", "/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemd-analyze", "verify", p).CombinedOutput()
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "halapi.service") {
			lines = append(lines, l)
		}
	}
	if err != nil || len(lines) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

type composeService struct {
	Image       string                    `yaml:"image"`
	Command     []string                  `yaml:"command"`
	Volumes     []string                  `yaml:"volumes"`
	DependsOn   map[string]map[string]any `yaml:"depends_on"`
	Healthcheck map[string]any            `yaml:"healthcheck"`
	User        string                    `yaml:"user"`
}

// The compose file: three nodes with their own volumes, n1 founds, n2 and
// n3 join with token files minted after n1 is healthy, no token on a
// command line, no node run as root.
func TestComposeFile(t *testing.T) {
	var c struct {
		Services map[string]composeService `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	readYAML(t, "docker/compose.yaml", &c)
	for _, n := range []string{"n1", "n2", "n3"} {
		s, ok := c.Services[n]
		if !ok {
			t.Fatalf("no service %s", n)
		}
		cmd := strings.Join(s.Command, " ")
		if !strings.HasPrefix(cmd, "serve --data-dir /var/lib/halapi --node-id "+n) || s.Healthcheck == nil {
			t.Errorf("%s: command %q", n, cmd)
		}
		if !containsPrefix(s.Volumes, n+"-data:/var/lib/halapi") {
			t.Errorf("%s: no data volume: %v", n, s.Volumes)
		}
		if _, ok := c.Volumes[n+"-data"]; !ok {
			t.Errorf("volume %s-data not declared", n)
		}
		if strings.Contains(cmd, "--join-token ") || strings.Contains(cmd, "--plain-http") || strings.Contains(cmd, "--insecure-cluster") {
			t.Errorf("%s: token on the command line or an insecure flag: %q", n, cmd)
		}
		if s.User != "" && (s.User == "0" || strings.HasPrefix(s.User, "root") || strings.HasPrefix(s.User, "0:")) {
			t.Errorf("%s runs as root", n)
		}
		if n == "n1" {
			if strings.Contains(cmd, "--join") {
				t.Errorf("n1 must found the cluster: %q", cmd)
			}
			continue
		}
		if !strings.Contains(cmd, "--join-token-file /var/lib/halapi-join/"+n) || !strings.Contains(cmd, "--join-api n1:8080") {
			t.Errorf("%s does not join with its token file: %q", n, cmd)
		}
		if s.DependsOn["tokens"]["condition"] != "service_completed_successfully" {
			t.Errorf("%s does not wait for the tokens: %v", n, s.DependsOn)
		}
	}
	tok := c.Services["tokens"]
	if tok.DependsOn["n1"]["condition"] != "service_healthy" || !strings.Contains(strings.Join(tok.Command, " "), "halapi cluster token --data-dir /n1") {
		t.Errorf("tokens service: %+v", tok)
	}
	if ok, out := composeConfig(t); ok {
		t.Logf("docker compose config: OK")
	} else if out != "" {
		t.Fatalf("docker compose config:\n%s", out)
	}
}

func containsPrefix(list []string, p string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// composeConfig runs `docker compose config` when the compose plugin is
// installed (no daemon needed): ok, or its complaint; ("", false) without it.
func composeConfig(t *testing.T) (bool, string) {
	if _, err := exec.LookPath("docker"); err != nil {
		return false, ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "compose", "version").Run(); err != nil {
		t.Log("docker compose plugin not installed: compose file only parsed")
		return false, ""
	}
	out, err := exec.CommandContext(ctx, "docker", "compose", "-f", "docker/compose.yaml", "config", "-q").CombinedOutput()
	return err == nil, string(out)
}

// The Kubernetes manifest: a StatefulSet of 3 non-root pods with a volume
// each, probes on /health, and the headless Service it names.
func TestKubernetesManifest(t *testing.T) {
	f, err := os.Open("kubernetes/halapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	kinds := map[string]map[string]any{}
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := get(doc, "metadata", "name").(string)
		kinds[doc["kind"].(string)+"/"+name] = doc
	}
	sts, ok := kinds["StatefulSet/halapi"]
	if !ok {
		t.Fatalf("no StatefulSet/halapi: %v", kinds)
	}
	if get(sts, "spec", "replicas") != 3 || get(sts, "spec", "serviceName") != "halapi" {
		t.Errorf("statefulset spec: %v", sts["spec"])
	}
	if _, ok := kinds["Service/halapi"]; !ok || get(kinds["Service/halapi"], "spec", "clusterIP") != "None" {
		t.Error("no headless Service/halapi")
	}
	pod := get(sts, "spec", "template", "spec").(map[string]any)
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("pods may run as root")
	}
	ctr := pod["containers"].([]any)[0].(map[string]any)
	if get(ctr, "securityContext", "allowPrivilegeEscalation") != false || get(ctr, "securityContext", "readOnlyRootFilesystem") != true {
		t.Errorf("container securityContext: %v", ctr["securityContext"])
	}
	if get(ctr, "readinessProbe", "httpGet", "path") != "/health" || get(ctr, "readinessProbe", "httpGet", "scheme") != "HTTPS" {
		t.Errorf("readiness probe: %v", ctr["readinessProbe"])
	}
	args := strings.Join(toStrings(ctr["args"]), " ")
	for _, want := range []string{"--data-dir /var/lib/halapi", "--join-token-file", "--cluster-listen \"$POD_IP:8300\"", "--gossip-listen \"$POD_IP:7946\""} {
		if !strings.Contains(args, want) {
			t.Errorf("container args lack %q", want)
		}
	}
	vct := get(sts, "spec", "volumeClaimTemplates").([]any)
	if len(vct) != 1 || get(vct[0].(map[string]any), "metadata", "name") != "data" {
		t.Errorf("volumeClaimTemplates: %v", vct)
	}
	// the shell script runs under sh -n
	if sh, err := exec.LookPath("sh"); err == nil {
		cmd := exec.Command(sh, "-n")
		cmd.Stdin = strings.NewReader(args)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("container script: %v\n%s", err, out)
		}
	}
}

func get(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func toStrings(v any) []string {
	var out []string
	l, _ := v.([]any)
	for _, x := range l {
		out = append(out, x.(string))
	}
	return out
}

// The Dockerfile runs as a non-root user with the data dir a volume; the
// image is built only when HALAPI_TEST_IMAGE=1 and a docker daemon
// answers: the build pulls base images from a registry (minutes, and
// impossible on a machine that reaches only the Go module proxy), so an
// installed daemon alone must not turn make test into a network test.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{"USER 10001:10001", `VOLUME ["/var/lib/halapi"]`, `ENTRYPOINT ["/usr/bin/halapi"]`, "CGO_ENABLED=0"} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if testing.Short() || os.Getenv("HALAPI_TEST_IMAGE") != "1" {
		t.Log("HALAPI_TEST_IMAGE=1 not set: image not built")
		return
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Log("docker not installed: image not built")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err = exec.CommandContext(ctx, "docker", "info").Run()
	cancel()
	if err != nil {
		t.Log("no docker daemon answers: image not built")
		return
	}
	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out bytes.Buffer
	build := exec.CommandContext(ctx, "docker", "build", "-q", "-f", "dist/docker/Dockerfile", "-t", "halapi:test", ".")
	build.Dir = ".."
	build.Stdout, build.Stderr = &out, &out
	if err := build.Run(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out.String())
	}
	run, err := exec.CommandContext(ctx, "docker", "run", "--rm", "halapi:test", "version").CombinedOutput()
	if err != nil || !strings.Contains(string(run), "raft entry format") {
		t.Fatalf("docker run halapi:test version: %v\n%s", err, run)
	}
	uid, err := exec.CommandContext(ctx, "docker", "run", "--rm", "--entrypoint", "id", "halapi:test", "-u").CombinedOutput()
	if err != nil || strings.TrimSpace(string(uid)) == "0" {
		t.Fatalf("the image runs as root: %v %s", err, uid)
	}
}

// nfpm itself checks the config when it is on PATH (`make package` runs it
// through the module proxy instead: minutes on a cold cache, not in make
// test) and bin/package/halapi exists.
func TestNFPMPackages(t *testing.T) {
	nfpm, err := exec.LookPath("nfpm")
	if err != nil {
		t.Log("nfpm not on PATH: packages not built here (make package builds them)")
		return
	}
	if _, err := os.Stat("../bin/package/halapi"); err != nil {
		t.Log("no bin/package/halapi (make package builds it): packages not built here")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := t.TempDir()
	for _, p := range []string{"deb", "rpm"} {
		cmd := exec.CommandContext(ctx, nfpm, "package", "-f", "dist/nfpm.yaml", "-p", p, "-t", out)
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "GOARCH=amd64", "PKG_VERSION=0.0.0+test")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nfpm %s: %v\n%s", p, err, b)
		}
	}
}
