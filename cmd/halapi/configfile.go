package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Config files of `serve`. halapi's own file (--config) is a flat YAML
// mapping whose keys are the serve flag names, so every flag, including
// one added later, is settable from it. CrowdSec's config.yaml
// (--crowdsec-config) is translated into the same flag values
// (crowdsecconfig.go). Precedence: command line > --config > --crowdsec-config.

const (
	flagConfig         = "config"
	flagCrowdsecConfig = "crowdsec-config"
)

// configFlags are the serve flags of this file.
type configFlags struct {
	config, crowdsecConfig string
}

func bindConfigFlags(fl *pflag.FlagSet, f *configFlags, allowPlainRemote *bool) {
	fl.StringVar(&f.config, flagConfig, "", "YAML file of serve settings: each key is a flag name (e.g. `max-connections-per-ip: 256`); flags on the command line override it")
	fl.StringVar(&f.crowdsecConfig, flagCrowdsecConfig, "", "CrowdSec config.yaml to take the LAPI settings from (api.server, db_config.flush, prometheus); --config and command-line flags override it")
	fl.BoolVar(allowPlainRemote, "allow-plain-http-remote", false, "with --plain-http: allow a non-loopback --listen (clients' credentials and tokens cross the network in clear; for a move from CrowdSec's http:// LAPI)")
}

// configValue is what a file sets a flag to: one scalar, or a list for a
// repeatable flag.
type configValue struct {
	scalar string
	list   []string
	isList bool
	from   string // where it was set, for error messages
}

// fileOnlyFlag: flags a config file cannot set (crowdsec-config can be
// named in --config: the CrowdSec file is then read under it).
func fileOnlyFlag(name string) bool {
	return name == flagConfig || name == "help"
}

// readConfigFile parses halapi's own config file: a mapping of flag names
// to scalars or lists. An unknown key is an error naming it.
func readConfigFile(path string, fl *pflag.FlagSet) (map[string]configValue, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return map[string]configValue{}, nil // empty file
		}
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return map[string]configValue{}, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("--config %s: expected a mapping of flag names to values", path)
	}
	out := map[string]configValue{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		where := fmt.Sprintf("--config %s: line %d: key %q", path, k.Line, name)
		if fileOnlyFlag(name) {
			return nil, fmt.Errorf("%s: cannot be set in a config file", where)
		}
		flag := fl.Lookup(name)
		if flag == nil {
			if alt := strings.ReplaceAll(name, "_", "-"); alt != name && fl.Lookup(alt) != nil {
				return nil, fmt.Errorf("%s: unknown key (did you mean %s? keys are the flag names of `halapi serve`)", where, alt)
			}
			return nil, fmt.Errorf("%s: unknown key (keys are the flag names of `halapi serve`)", where)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: set twice", where)
		}
		_, isSlice := sliceValue(flag)
		cv := configValue{from: where}
		if v.Kind == yaml.AliasNode && v.Alias != nil {
			v = v.Alias
		}
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			if isSlice {
				cv.isList = true
			}
		case v.Kind == yaml.ScalarNode:
			cv.scalar = v.Value
		case v.Kind == yaml.SequenceNode && isSlice:
			cv.isList = true
			for _, e := range v.Content {
				if e.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("%s: list items must be plain values", where)
				}
				cv.list = append(cv.list, e.Value)
			}
		case v.Kind == yaml.SequenceNode:
			return nil, fmt.Errorf("%s: takes one value, not a list", where)
		default:
			return nil, fmt.Errorf("%s: expected a value, not a mapping", where)
		}
		out[name] = cv
	}
	return out, nil
}

// applyConfigFiles reads --crowdsec-config and --config (when given) and
// sets every flag they name that the command line did not set. Warnings
// (CrowdSec settings halapi ignores) go to warn, one line each.
// It returns, for each flag it set, the file that set it ("crowdsec" or
// "config").
func applyConfigFiles(fl *pflag.FlagSet, f configFlags, warn io.Writer) (map[string]string, error) {
	origin := map[string]string{}
	if f.config == "" && f.crowdsecConfig == "" {
		return origin, nil
	}
	cmdline := map[string]bool{}
	fl.Visit(func(fl *pflag.Flag) { cmdline[fl.Name] = true })

	// halapi's own file first: it may name the CrowdSec file
	var own map[string]configValue
	if f.config != "" {
		var err error
		if own, err = readConfigFile(f.config, fl); err != nil {
			return nil, err
		}
	}
	csPath := f.crowdsecConfig
	if v, ok := own[flagCrowdsecConfig]; ok {
		delete(own, flagCrowdsecConfig)
		if !cmdline[flagCrowdsecConfig] {
			csPath = v.scalar
		}
	}
	vals := map[string]configValue{}
	if csPath != "" {
		cs, warnings, err := crowdsecSettings(csPath, os.LookupEnv)
		if err != nil {
			return nil, err
		}
		for _, name := range sortedKeys(cs) {
			if fl.Lookup(name) == nil {
				// a mapping to a flag this build does not have
				warnings = append(warnings, fmt.Sprintf("%s: ignored: halapi has no --%s", cs[name].from, name))
				continue
			}
			vals[name] = cs[name]
			origin[name] = "crowdsec"
		}
		for _, w := range warnings {
			fmt.Fprintln(warn, "WARNING: --crowdsec-config", w)
		}
	}
	for k, v := range own {
		vals[k] = v
		origin[k] = "config"
	}
	for _, name := range sortedKeys(vals) {
		if cmdline[name] {
			delete(origin, name)
			continue
		}
		if err := setFlag(fl, name, vals[name]); err != nil {
			return nil, err
		}
	}
	return origin, nil
}

func setFlag(fl *pflag.FlagSet, name string, v configValue) error {
	flag := fl.Lookup(name)
	sv, isSlice := sliceValue(flag)
	if !isSlice {
		if err := fl.Set(name, v.scalar); err != nil {
			return fmt.Errorf("%s: %v", v.from, err)
		}
		return nil
	}
	list := v.list
	if !v.isList {
		list = []string{v.scalar}
		if baseValue(flag.Value).Type() == "stringSlice" {
			// as on the command line: comma-separated
			list = nil
			for _, s := range strings.Split(v.scalar, ",") {
				if s = strings.TrimSpace(s); s != "" {
					list = append(list, s)
				}
			}
		}
	}
	if err := sv.Replace(list); err != nil {
		return fmt.Errorf("%s: %v", v.from, err)
	}
	flag.Changed = true
	return nil
}

// baseValue unwraps the help wrappers of polishHelp.
func baseValue(v pflag.Value) pflag.Value {
	for {
		switch w := v.(type) {
		case named:
			v = w.Value
		case plainBool:
			v = w.Value
		default:
			return v
		}
	}
}

// sliceValue: the flag's list interface, for repeatable flags.
func sliceValue(flag *pflag.Flag) (pflag.SliceValue, bool) {
	sv, ok := baseValue(flag.Value).(pflag.SliceValue)
	return sv, ok
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// resolveServeFlags applies the config files to the parsed flags and
// checks the combinations that depend on where a value came from.
func resolveServeFlags(fl *pflag.FlagSet, f *serveFlags, warn io.Writer) error {
	origin, err := applyConfigFiles(fl, f.files, warn)
	if err != nil {
		return err
	}
	f.metricsExplicit = fl.Changed("metrics-listen")
	f.memoryLimitSet = fl.Changed("memory-limit")
	return checkPlainHTTP(*f, origin["plain-http"] == "crowdsec")
}

// checkPlainHTTP: plain HTTP on a non-loopback address needs a second,
// explicit flag; with it the node warns at start and in cluster status.
func checkPlainHTTP(f serveFlags, fromCrowdsec bool) error {
	if !f.pki.plainHTTP || isLoopbackHost(f.listen) || f.pki.plainRemote {
		return nil
	}
	if fromCrowdsec {
		return fmt.Errorf("--crowdsec-config: api.server.listen_uri %s is plain http (no api.server.tls) on a non-loopback address: add --allow-plain-http-remote to serve it so (clients keep their http:// URL; credentials cross the network in clear), or --plain-http=false for HTTPS", f.listen)
	}
	return fmt.Errorf("--plain-http is only allowed on a loopback --listen address, not %s, unless --allow-plain-http-remote is given too (credentials then cross the network in clear)", f.listen)
}
