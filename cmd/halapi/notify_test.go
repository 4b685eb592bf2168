package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serve refuses to start, with one clear error, on the setups the
// reference refuses: a profile naming a notification without config, no
// plugin dir, a missing or unsafe plugin binary, a config that does not
// parse.
func TestPrepareNotifyRefusals(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	ndir, pdir := filepath.Join(dir, "notifications"), filepath.Join(dir, "plugins")
	for _, d := range []string{ndir, pdir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(ndir, "http.yaml"), "type: http\nname: http_default\nurl: http://127.0.0.1:1/\n---\ntype: http\nname: http_other\n", 0o600)
	write(filepath.Join(ndir, "slack.yaml"), "type: slack\nname: slack_default\n", 0o600)
	f := notifyFlags{notificationDir: ndir, pluginDir: pdir}

	// no profile lists a notification: nothing to check, nothing runs
	if svc, used, err := prepareNotify(notifyFlags{}, nil, nil, log); err != nil || svc == nil || used != nil {
		t.Fatalf("no notifications: %v %v", err, used)
	}
	// nor a missing or broken notification dir (CrowdSec's config.yaml
	// names one whether or not notifications are used)
	if _, used, err := prepareNotify(notifyFlags{notificationDir: filepath.Join(dir, "absent")}, nil, nil, log); err != nil || used != nil {
		t.Fatalf("absent dir without notifications: %v", err)
	}
	for _, tc := range []struct {
		f     notifyFlags
		names []string
		want  string
	}{
		{f, []string{"email_default"}, "config file for plugin email_default not found"},
		{notifyFlags{notificationDir: ndir}, []string{"http_default"}, "--plugin-dir is not set"},
		{f, []string{"http_default"}, "notification-http does not exist"},
		{notifyFlags{notificationDir: filepath.Join(dir, "nope")}, []string{"x"}, `config file for plugin x not found (--notification-dir "` + filepath.Join(dir, "nope") + `")`},
	} {
		_, _, err := prepareNotify(tc.f, tc.names, nil, log)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: got %v, want %q", tc.names, err, tc.want)
		}
	}
	bin := filepath.Join(pdir, "notification-http")
	write(bin, "#!/bin/sh\n", 0o777)
	if _, _, err := prepareNotify(f, []string{"http_default"}, nil, log); err == nil || !strings.Contains(err.Error(), "world writable") {
		t.Errorf("world-writable plugin: %v", err)
	}
	write(bin, "#!/bin/sh\n", 0o755)
	_, used, err := prepareNotify(f, []string{"http_default"}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	// the plugin types the profiles use run with every config of the type
	if len(used) != 2 || used[0].Name != "http_default" || used[1].Name != "http_other" {
		t.Fatalf("used configs %v", used)
	}
	write(filepath.Join(ndir, "bad.yaml"), "type: http\n", 0o600)
	if _, _, err := prepareNotify(f, []string{"http_default"}, nil, log); err == nil ||
		err.Error() != "notifications: notification config bad.yaml: document 0: missing required field 'name'" {
		t.Errorf("bad config: %v", err)
	}
}
