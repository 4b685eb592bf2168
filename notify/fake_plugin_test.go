package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

// The test binary doubles as a notification plugin: with HALAPI_FAKE_PLUGIN
// set it serves the Notifier service (see TestMain) through the same
// go-plugin handshake the reference's plugins use. Its config keys:
// out (file where each notification is appended as one JSON line),
// fail_first (fail that many Notify calls first, counted in the file
// out + ".attempts"), hang (never answer).

func TestMain(m *testing.M) {
	if os.Getenv("HALAPI_FAKE_PLUGIN") != "" {
		ServePlugin(&fakePlugin{cfgs: map[string]fakeCfg{}})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type fakeCfg struct {
	Name      string `yaml:"name"`
	Out       string `yaml:"out"`
	FailFirst int    `yaml:"fail_first"`
	Hang      bool   `yaml:"hang"`
	Raw       string `yaml:"-"`
}

type fakePlugin struct {
	mu   sync.Mutex
	cfgs map[string]fakeCfg
}

func (p *fakePlugin) Configure(_ context.Context, c *PluginConfig) error {
	var fc fakeCfg
	if err := yaml.Unmarshal(c.Config, &fc); err != nil {
		return err
	}
	fc.Raw = string(c.Config)
	p.mu.Lock()
	p.cfgs[fc.Name] = fc
	p.mu.Unlock()
	if fc.Out != "" {
		return os.WriteFile(fc.Out+".config", c.Config, 0o600)
	}
	return nil
}

func (p *fakePlugin) Notify(ctx context.Context, n *Notification) error {
	p.mu.Lock()
	fc, ok := p.cfgs[n.Name]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("invalid plugin config name %s", n.Name)
	}
	if fc.Hang {
		<-ctx.Done()
		return ctx.Err()
	}
	attempts := 0
	if b, err := os.ReadFile(fc.Out + ".attempts"); err == nil {
		attempts = strings.Count(string(b), "\n")
	}
	af, err := os.OpenFile(fc.Out+".attempts", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	fmt.Fprintln(af, "attempt")
	af.Close()
	if attempts < fc.FailFirst {
		return fmt.Errorf("fake failure %d", attempts+1)
	}
	line, _ := json.Marshal(map[string]string{"name": n.Name, "text": n.Text})
	f, err := os.OpenFile(fc.Out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(append(line, '\n'))
	return err
}

// fakePluginDir writes a plugin dir holding notification-<typ>, a script
// that runs this test binary as the fake plugin.
func fakePluginDir(t *testing.T, typ string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\nHALAPI_FAKE_PLUGIN=1 exec %q \"$@\"\n", exe)
	if err := os.WriteFile(filepath.Join(dir, "notification-"+typ), []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// received reads what the fake plugin got.
func received(t *testing.T, out string) []map[string]string {
	t.Helper()
	b, err := os.ReadFile(out)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var m map[string]string
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	return got
}
