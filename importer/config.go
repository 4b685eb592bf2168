package importer

import (
	"bytes"
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

// LoadConfig reads CrowdSec's config.yaml. Environment variables are
// expanded as CrowdSec expands them ($VAR and ${VAR}, only when defined);
// unknown keys are ignored
// (the file configures much more than the LAPI).
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	expanded := expandDefined(string(raw), os.LookupEnv)
	var c csConfig
	if err := yaml.NewDecoder(bytes.NewReader([]byte(expanded))).Decode(&c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
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
