package notify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultTimeout is a notification's Notify timeout when its config sets none
// (the reference's).
const DefaultTimeout = 5 * time.Second

// Bounds of a configuration bundle (it may come from the replicated state).
const (
	maxConfigFiles = 256
	maxConfigBytes = 1 << 20
	maxConfigs     = 1024
)

// Config is one notification configuration: one YAML document of a
// notifications/*.yaml file, as CrowdSec's plugin broker reads it.
type Config struct {
	// File is the file the document came from; Doc its index there.
	File string
	Doc  int

	Type           string
	Name           string
	Format         string
	GroupWait      time.Duration
	GroupThreshold int
	MaxRetry       uint
	Timeout        time.Duration
	LogLevel       string
	// Plugin holds every other key (url, headers, webhook, smtp_host, ...),
	// passed through to the plugin's Configure untouched.
	Plugin map[string]any

	tmpl *template.Template
}

// known keys of the reference's PluginConfig; the rest goes to Plugin.
var knownKeys = map[string]bool{"type": true, "name": true, "format": true, "group_wait": true,
	"group_threshold": true, "max_retry": true, "timeout": true}

// nameRE bounds what a notification name or type may be: it is a key in
// profiles, a plugin binary suffix and a replicated cursor key.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,254}$`)

// ParseConfigs reads notification configurations from files (file name ->
// content, e.g. the contents of the notification dir). As the reference
// does, only names ending in .yaml or .yml are read, each may hold several
// YAML documents, empty documents are skipped, and a name defined twice is
// kept from the last file in name order (with a warning). Errors name the
// file and the document.
func ParseConfigs(files map[string][]byte) ([]*Config, []string, error) {
	if len(files) > maxConfigFiles {
		return nil, nil, fmt.Errorf("notification configs: more than %d files", maxConfigFiles)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		if strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []*Config
	var warnings []string
	index := map[string]int{}
	for _, fn := range names {
		if len(files[fn]) > maxConfigBytes {
			return nil, nil, fmt.Errorf("notification config %s: larger than %d bytes", fn, maxConfigBytes)
		}
		cfgs, err := parseFile(fn, files[fn])
		if err != nil {
			return nil, nil, err
		}
		for _, c := range cfgs {
			if i, dup := index[c.Name]; dup {
				warnings = append(warnings, fmt.Sprintf("notification '%s' is defined multiple times (%s, %s): the last one is used",
					c.Name, out[i].File, c.File))
				out[i] = c
				continue
			}
			if len(out) >= maxConfigs {
				return nil, nil, fmt.Errorf("notification configs: more than %d", maxConfigs)
			}
			index[c.Name] = len(out)
			out = append(out, c)
		}
	}
	return out, warnings, nil
}

func parseFile(fn string, data []byte) ([]*Config, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*Config
	for doc := 0; ; doc++ {
		var raw map[string]any
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("notification config %s: document %d: %w", fn, doc, err)
		}
		if len(raw) == 0 {
			continue
		}
		c, err := fromMap(raw)
		if err != nil {
			return nil, fmt.Errorf("notification config %s: document %d: %w", fn, doc, err)
		}
		c.File, c.Doc = fn, doc
		out = append(out, c)
	}
}

func fromMap(raw map[string]any) (*Config, error) {
	c := &Config{Plugin: map[string]any{}, Timeout: DefaultTimeout}
	str := func(k string) (string, error) {
		switch v := raw[k].(type) {
		case nil:
			return "", nil
		case string:
			return v, nil
		}
		return "", fmt.Errorf("%s: must be a string", k)
	}
	dur := func(k string) (time.Duration, error) {
		switch v := raw[k].(type) {
		case nil:
			return 0, nil
		case string:
			d, err := time.ParseDuration(v)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", k, err)
			}
			if d < 0 {
				return 0, fmt.Errorf("%s: must not be negative", k)
			}
			return d, nil
		case int:
			// yaml.v2 (the reference) reads a bare number as nanoseconds
			if v < 0 {
				return 0, fmt.Errorf("%s: must not be negative", k)
			}
			return time.Duration(v), nil
		}
		return 0, fmt.Errorf("%s: must be a duration such as 30s", k)
	}
	num := func(k string) (int, error) {
		switch v := raw[k].(type) {
		case nil:
			return 0, nil
		case int:
			if v < 0 {
				return 0, fmt.Errorf("%s: must not be negative", k)
			}
			return v, nil
		}
		return 0, fmt.Errorf("%s: must be a whole number", k)
	}
	var err error
	if c.Type, err = str("type"); err != nil {
		return nil, err
	}
	if c.Type == "" {
		return nil, errors.New("missing required field 'type'")
	}
	if !nameRE.MatchString(c.Type) || strings.Contains(c.Type, "-") {
		return nil, fmt.Errorf("type %q: must be letters, digits, _ . @ : (it names the binary notification-<type>)", c.Type)
	}
	if c.Name, err = str("name"); err != nil {
		return nil, err
	}
	if c.Name == "" {
		return nil, errors.New("missing required field 'name'")
	}
	if !nameRE.MatchString(c.Name) {
		return nil, fmt.Errorf("name %q: must be 1-255 letters, digits or _ . @ : -", c.Name)
	}
	if c.Format, err = str("format"); err != nil {
		return nil, err
	}
	if c.GroupWait, err = dur("group_wait"); err != nil {
		return nil, err
	}
	if c.GroupThreshold, err = num("group_threshold"); err != nil {
		return nil, err
	}
	mr, err := num("max_retry")
	if err != nil {
		return nil, err
	}
	c.MaxRetry = uint(mr)
	t, err := dur("timeout")
	if err != nil {
		return nil, err
	}
	if t > 0 {
		c.Timeout = t
	}
	for k, v := range raw {
		if !knownKeys[k] {
			c.Plugin[k] = v
		}
	}
	if lv, ok := raw["log_level"].(string); ok {
		c.LogLevel = lv
	}
	if c.tmpl, err = parseTemplate(c.Format); err != nil {
		return nil, fmt.Errorf("format: %w", err)
	}
	return c, nil
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)`)

// strictExpand replaces ${VAR} and $VAR with the variable's value when it is
// set and keeps the reference otherwise (go-cs-lib's StrictExpand).
func strictExpand(s string, lookup func(string) (string, bool)) string {
	return envRef.ReplaceAllStringFunc(s, func(ref string) string {
		if v, ok := lookup(strings.Trim(ref, "${}")); ok {
			return v
		}
		return ref
	})
}

// ConfigureYAML is what the plugin's Configure receives: the config
// marshalled back to YAML with the reference's keys (durations as Go
// duration strings, empty fields omitted as its omitempty tags do) and the
// plugin's own keys inline, then ${VAR}/$VAR expanded from the environment.
func (c *Config) ConfigureYAML(lookup func(string) (string, bool)) ([]byte, error) {
	m := map[string]any{}
	for k, v := range c.Plugin {
		m[k] = v
	}
	m["type"] = c.Type
	m["name"] = c.Name
	if c.GroupWait != 0 {
		m["group_wait"] = c.GroupWait.String()
	}
	if c.GroupThreshold != 0 {
		m["group_threshold"] = c.GroupThreshold
	}
	if c.MaxRetry != 0 {
		m["max_retry"] = c.MaxRetry
	}
	if c.Timeout != 0 {
		m["timeout"] = c.Timeout.String()
	}
	if c.Format != "" {
		m["format"] = c.Format
	}
	b, err := yaml.Marshal(m)
	if err != nil {
		return nil, err
	}
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return []byte(strictExpand(string(b), lookup)), nil
}

// CheckProfiles returns an error naming the first notification that a
// profile lists and no config defines (the reference refuses to start).
func CheckProfiles(cfgs []*Config, profileNotifications []string) error {
	have := map[string]bool{}
	for _, c := range cfgs {
		have[c.Name] = true
	}
	for _, n := range profileNotifications {
		if !have[n] {
			return fmt.Errorf("config file for plugin %s not found", n)
		}
	}
	return nil
}
