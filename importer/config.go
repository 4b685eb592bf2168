package importer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// DBConfig is CrowdSec's db_config (the keys `halapi import` uses).
type DBConfig struct {
	Type          string `yaml:"type"`
	DbPath        string `yaml:"db_path"`
	User          string `yaml:"user"`
	Password      string `yaml:"password"`
	DbName        string `yaml:"db_name"`
	Host          string `yaml:"host"`
	Port          int    `yaml:"port"`
	SSLMode       string `yaml:"sslmode"`
	SSLCACert     string `yaml:"ssl_ca_cert"`
	SSLClientCert string `yaml:"ssl_client_cert"`
	SSLClientKey  string `yaml:"ssl_client_key"`
}

// Config is what import reads from CrowdSec's config.yaml.
type Config struct {
	DB DBConfig
	// CredentialsPath is api.server.online_client.credentials_path ("" when
	// the LAPI has no online client).
	CredentialsPath string
	// ConsolePath and ProfilesPath are api.server.console_path and
	// profiles_path (CrowdSec's defaults next to config.yaml when unset).
	ConsolePath  string
	ProfilesPath string
}

type csConfig struct {
	ConfigPaths struct {
		ConfigDir string `yaml:"config_dir"`
		DataDir   string `yaml:"data_dir"`
	} `yaml:"config_paths"`
	DbConfig *DBConfig `yaml:"db_config"`
	API      struct {
		Server *struct {
			ProfilesPath string `yaml:"profiles_path"`
			ConsolePath  string `yaml:"console_path"`
			OnlineClient *struct {
				CredentialsPath string `yaml:"credentials_path"`
			} `yaml:"online_client"`
		} `yaml:"server"`
	} `yaml:"api"`
}

// expandDefined replaces $NAME and ${NAME} by the variable's value when
// it is defined and leaves the text as it is otherwise (CrowdSec's rule:
// a password holding "$x" survives when no variable x exists).
func expandDefined(s string, lookup func(string) (string, bool)) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		var name string
		end := i + 1
		if s[i+1] == '{' {
			j := strings.IndexByte(s[i+2:], '}')
			if j < 0 {
				b.WriteByte(s[i])
				continue
			}
			name, end = s[i+2:i+2+j], i+3+j
		} else {
			for end < len(s) && (s[end] == '_' || s[end] >= 'a' && s[end] <= 'z' || s[end] >= 'A' && s[end] <= 'Z' || s[end] >= '0' && s[end] <= '9') {
				end++
			}
			name = s[i+1 : end]
		}
		if v, ok := lookup(name); ok && name != "" {
			b.WriteString(v)
			i = end - 1
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ReadConfigYAML reads a CrowdSec config.yaml as CrowdSec does: FILE.local,
// when it exists, merged over it (mappings key by key, anything else
// replaced), and environment variables expanded ($VAR and ${VAR}, only
// when lookupEnv defines them). Both `halapi import` and `halapi serve
// --crowdsec-config` read the file through it.
func ReadConfigYAML(path string, lookupEnv func(string) (string, bool)) (map[string]any, error) {
	doc, err := readConfigNode(path, lookupEnv)
	if err != nil || doc == nil {
		return nil, err
	}
	var m map[string]any
	if err := doc.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// readConfigNode is ReadConfigYAML as a YAML node (nil for an empty
// file): decoding the node keeps each scalar as written (a password
// "0123" stays a string where a map would make it a number).
func readConfigNode(path string, lookupEnv func(string) (string, bool)) (*yaml.Node, error) {
	load := func(p string) (*yaml.Node, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(expandDefined(string(b), lookupEnv)), &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
			return doc.Content[0], nil
		}
		return nil, nil // empty
	}
	base, err := load(path)
	if err != nil {
		return nil, err
	}
	local, err := load(path + ".local")
	switch {
	case err == nil:
		base = mergeNodes(base, local)
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	return base, nil
}

// mergeNodes merges b over a: mappings key by key, anything else replaced.
func mergeNodes(a, b *yaml.Node) *yaml.Node {
	if b == nil {
		return a
	}
	if a == nil || a.Kind != yaml.MappingNode || b.Kind != yaml.MappingNode {
		return b
	}
	for i := 0; i+1 < len(b.Content); i += 2 {
		k, v := b.Content[i], b.Content[i+1]
		found := false
		for j := 0; j+1 < len(a.Content); j += 2 {
			if a.Content[j].Value == k.Value {
				a.Content[j+1] = mergeNodes(a.Content[j+1], v)
				found = true
				break
			}
		}
		if !found {
			a.Content = append(a.Content, k, v)
		}
	}
	return a
}

// LoadConfig reads CrowdSec's config.yaml (ReadConfigYAML: .local merged,
// environment expanded); unknown keys are ignored (the file configures
// much more than the LAPI).
func LoadConfig(path string) (*Config, error) {
	doc, err := readConfigNode(path, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	var c csConfig
	if doc != nil {
		if err := doc.Decode(&c); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if c.DbConfig == nil {
		return nil, fmt.Errorf("%s: no db_config section", path)
	}
	out := &Config{DB: *c.DbConfig}
	dir := c.ConfigPaths.ConfigDir
	if dir == "" {
		dir = filepath.Dir(path)
	}
	if s := c.API.Server; s != nil {
		out.ProfilesPath, out.ConsolePath = s.ProfilesPath, s.ConsolePath
		if s.OnlineClient != nil {
			out.CredentialsPath = s.OnlineClient.CredentialsPath
		}
	}
	if out.ProfilesPath == "" {
		out.ProfilesPath = filepath.Join(dir, "profiles.yaml")
	}
	if out.ConsolePath == "" {
		out.ConsolePath = filepath.Join(dir, "console.yaml")
	}
	switch out.DB.Type {
	case "sqlite":
		if out.DB.DbPath == "" {
			if c.ConfigPaths.DataDir == "" {
				return nil, errors.New("db_config: sqlite without db_path")
			}
			out.DB.DbPath = filepath.Join(c.ConfigPaths.DataDir, "crowdsec.db")
		}
	case "mysql", "postgres", "postgresql", "pgx":
	case "":
		return nil, fmt.Errorf("%s: db_config has no type", path)
	default:
		return nil, fmt.Errorf("%s: unknown db_config type %q (sqlite, mysql, postgres or pgx)", path, out.DB.Type)
	}
	return out, nil
}
