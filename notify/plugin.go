package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
)

// PluginOptions say where the plugin binaries are and how to run them.
type PluginOptions struct {
	// Dir holds the binaries, named notification-<type> (CrowdSec's
	// config_paths.plugin_dir).
	Dir string
	// User and Group run the plugins as another user (CrowdSec's
	// plugin_config.user/group): both or neither.
	User, Group string
	// LookupEnv expands ${VAR} in the configs (default os.LookupEnv).
	LookupEnv func(string) (string, bool)
	Logger    *slog.Logger
}

// BinaryPath is the plugin binary of a notification type.
func (o PluginOptions) BinaryPath(typ string) string {
	return filepath.Join(o.Dir, "notification-"+typ)
}

// CheckBinary applies the reference's checks to a plugin binary: it exists,
// is owned by the user halapi runs as, is neither group- nor
// world-writable and has no setgid bit (and, beyond the reference, is a
// regular executable file).
func CheckBinary(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("plugin at %s does not exist: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("plugin at %s is not a regular file", path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		name := strconv.Itoa(os.Getuid())
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
		return fmt.Errorf("plugin at %s is not owned by user '%s'", path, name)
	}
	perm := st.Mode()
	switch {
	case perm&0o002 != 0:
		return fmt.Errorf("plugin at %s is world writable, world writable plugins are invalid", path)
	case perm&0o020 != 0:
		return fmt.Errorf("plugin at %s is group writable, group writable plugins are invalid", path)
	case perm&os.ModeSetgid != 0:
		return fmt.Errorf("plugin at %s has setgid permission, which is not allowed", path)
	case perm&0o100 == 0:
		return fmt.Errorf("plugin at %s is not executable by its owner", path)
	}
	return nil
}

// credential resolves plugin user/group like the reference (both or
// neither). Switching to another user needs root: without it the start is
// refused with a clear error instead of a failed fork.
func credential(userName, group string) (*syscall.Credential, error) {
	if userName == "" && group == "" {
		return nil, nil
	}
	if userName == "" || group == "" {
		return nil, errors.New("while getting process attributes: both plugin user and group must be set")
	}
	u, err := user.Lookup(userName)
	if err != nil {
		return nil, fmt.Errorf("plugin user: %w", err)
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return nil, fmt.Errorf("plugin group: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 31)
	gid, err2 := strconv.ParseUint(g.Gid, 10, 31)
	if err1 != nil || err2 != nil {
		return nil, errors.New("plugin user/group: out of bound uid or gid")
	}
	if os.Geteuid() != 0 && (int(uid) != os.Geteuid() || int(gid) != os.Getegid()) {
		return nil, fmt.Errorf("plugins must run as %s:%s but halapi is not root: run halapi as root or unset the plugin user and group (--plugin-user, --plugin-group)",
			userName, group)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// CheckPlugins checks, without starting anything, what StartPlugins needs
// for cfgs: every binary valid, the user and group usable.
func CheckPlugins(o PluginOptions, cfgs []*Config) error {
	if _, err := credential(o.User, o.Group); err != nil {
		return err
	}
	for _, typ := range types(cfgs) {
		if err := CheckBinary(o.BinaryPath(typ)); err != nil {
			return err
		}
	}
	return nil
}

func types(cfgs []*Config) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range cfgs {
		if !seen[c.Type] {
			seen[c.Type] = true
			out = append(out, c.Type)
		}
	}
	sort.Strings(out)
	return out
}

// Plugins are running plugin processes: one per type, configured with
// every config of that type.
type Plugins struct {
	mu      sync.Mutex
	byName  map[string]Notifier
	clients map[string]*plugin.Client // by type
	typeOf  map[string]string         // name -> type
}

// Notifier returns the running plugin serving notification name.
func (p *Plugins) Notifier(name string) (Notifier, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.byName[name]
	return n, ok
}

// Exited reports whether the process serving name has stopped.
func (p *Plugins) Exited(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.clients[p.typeOf[name]]
	return c == nil || c.Exited()
}

// PIDs returns the process IDs of the running plugins (for tests).
func (p *Plugins) PIDs() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for _, c := range p.clients {
		if rc := c.ReattachConfig(); rc != nil {
			out = append(out, rc.Pid)
		}
	}
	sort.Ints(out)
	return out
}

// Close stops every plugin process and waits for it.
func (p *Plugins) Close() {
	p.mu.Lock()
	clients := p.clients
	p.clients = map[string]*plugin.Client{}
	p.byName = map[string]Notifier{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() { defer wg.Done(); c.Kill() }()
	}
	wg.Wait()
}

// StartPlugins starts the plugin binary of every type among cfgs and
// configures each config through it. On error nothing is left running.
func StartPlugins(ctx context.Context, o PluginOptions, cfgs []*Config) (*Plugins, error) {
	cred, err := credential(o.User, o.Group)
	if err != nil {
		return nil, err
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	p := &Plugins{byName: map[string]Notifier{}, clients: map[string]*plugin.Client{}, typeOf: map[string]string{}}
	for _, typ := range types(cfgs) {
		path := o.BinaryPath(typ)
		if err := CheckBinary(path); err != nil {
			p.Close()
			return nil, err
		}
		n, c, err := startOne(path, typ, cred, log)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("plugin %s: %w", path, err)
		}
		p.clients[typ] = c
		for _, cfg := range cfgs {
			if cfg.Type != typ {
				continue
			}
			data, err := cfg.ConfigureYAML(o.LookupEnv)
			if err == nil {
				cctx, cancel := context.WithTimeout(ctx, cfg.Timeout+10e9)
				err = n.Configure(cctx, &PluginConfig{Config: data})
				cancel()
			}
			if err != nil {
				p.Close()
				return nil, fmt.Errorf("while configuring %s: %w", cfg.Name, err)
			}
			p.byName[cfg.Name] = n
			p.typeOf[cfg.Name] = typ
			log.Info("notification plugin configured", "name", cfg.Name, "type", typ)
		}
	}
	return p, nil
}

func newCookie() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func startOne(path, typ string, cred *syscall.Credential, log *slog.Logger) (Notifier, *plugin.Client, error) {
	cmd := exec.Command(path)
	cmd.SysProcAttr = procAttr(cred)
	c := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugin.HandshakeConfig{ProtocolVersion: ProtocolVersion, MagicCookieKey: MagicCookieKey, MagicCookieValue: newCookie()},
		Plugins:          map[string]plugin.Plugin{typ: &notifierPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger: hclog.New(&hclog.LoggerOptions{Name: "plugin." + typ, Level: hclog.Info,
			Output: &slogWriter{log: log.With("plugin", typ)}}),
	})
	rpc, err := c.Client()
	if err != nil {
		c.Kill()
		return nil, nil, err
	}
	raw, err := rpc.Dispense(typ)
	if err != nil {
		c.Kill()
		return nil, nil, err
	}
	n, ok := raw.(Notifier)
	if !ok {
		c.Kill()
		return nil, nil, fmt.Errorf("unexpected plugin client %T", raw)
	}
	return n, c, nil
}

// slogWriter turns go-plugin's log lines (its own and the plugin's stderr)
// into slog records: errors and warnings as such, the rest at debug level
// (the reference logs plugins at trace level).
type slogWriter struct {
	log *slog.Logger
	mu  sync.Mutex
}

var _ io.Writer = (*slogWriter)(nil)

func (w *slogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.Contains(line, "[ERROR]"):
			w.log.Error(line)
		case strings.Contains(line, "[WARN]"):
			w.log.Warn(line)
		default:
			// the plugins' own chatter (one line per notification)
			w.log.Debug(line)
		}
	}
	return len(b), nil
}
