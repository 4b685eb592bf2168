package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Help text: pflag names a flag's value after its Go type ("--data-dir
// string", "--trusted-ips strings", "--force[=true|false]") or after the
// first `quoted` word of its usage ("--join-token halapi cluster token").
// polishHelp gives every flag of every command a placeholder that says what
// to type instead, without changing how flags parse.

var placeholderByName = map[string]string{
	"data-dir": "DIR", "out": "DIR",
	"listen": "HOST:PORT", "cluster-listen": "HOST:PORT", "gossip-listen": "HOST:PORT", "metrics-listen": "HOST:PORT",
	"cluster-advertise": "HOST:PORT", "join": "HOST:PORT", "join-api": "HOST:PORT",
	"profiles": "FILE", "file": "FILE", "tls-cert": "FILE", "tls-key": "FILE", "crl": "FILE", "client-ca": "FILE",
	"capi-credentials": "FILE", "join-token-file": "FILE",
	"url": "URL", "capi-url": "URL", "lapi-url": "URL", "api-advertise": "URL",
	"node-id": "ID", "output": "FORMAT", "log-level": "LEVEL", "password": "PASSWORD", "key": "KEY", "name": "NAME",
	"reason": "TEXT", "comment": "TEXT", "description": "TEXT",
	"join-token": "TOKEN", "token": "TOKEN", "auto-registration-token": "TOKEN",
	"ip": "IP", "range": "CIDR", "scope": "SCOPE", "value": "VALUE", "type": "TYPE", "origin": "ORIGIN",
	"duration": "DURATION", "expiration": "DURATION", "flush-max-age": "AGE", "max-age": "AGE",
	"max-items": "N", "limit": "N",
	"trusted-ips": "CIDR,...", "trusted-proxies": "CIDR,...", "auto-registration-ranges": "CIDR,...",
	"agents-allowed-ou": "OU,...", "bouncers-allowed-ou": "OU,...", "api-name": "NAME",
	"admins-allowed-ou": "OU,...", "p12-password-file": "FILE",
	"voters": "ID[=HOST:PORT],...",
	"config": "FILE", "crowdsec-config": "FILE", "flush-metrics-max-age": "AGE",
	"flush-agents-autodelete-cert": "AGE", "flush-agents-autodelete-password": "AGE",
	"flush-bouncers-autodelete-cert": "AGE", "flush-bouncers-autodelete-api-key": "AGE",
}

var placeholderByType = map[string]string{
	"string": "VALUE", "duration": "DURATION", "int": "N", "int64": "N", "uint": "N", "uint64": "N",
	"strings": "VALUE,...", "stringSlice": "VALUE,...", "stringArray": "VALUE",
}

// named keeps a flag's value and parsing, and shows name as its type.
type named struct {
	pflag.Value
	name string
}

func (n named) Type() string { return n.name }

// plainBool hides IsBoolFlag from pflag's help (which prints
// "--force[=true|false]"); --force and --force=false still parse
// (NoOptDefVal is "true").
type plainBool struct{ pflag.Value }

func polishHelp(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.InitDefaultHelpFlag()
		polishFlags(c.LocalNonPersistentFlags())
		polishFlags(c.PersistentFlags())
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root.InitDefaultVersionFlag()
	walk(root)
}

func polishFlags(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		switch f.Value.(type) {
		case named, plainBool:
			return
		}
		f.Usage = strings.ReplaceAll(f.Usage, "`", "'")
		typ := f.Value.Type()
		if typ == "bool" {
			if f.DefValue == "true" {
				f.Usage += " (turn off with --" + f.Name + "=false)"
			}
			f.Value = plainBool{f.Value}
			return
		}
		name := placeholderByName[f.Name]
		if name == "" {
			name = placeholderByType[typ]
		}
		if name == "" {
			return
		}
		switch f.DefValue {
		case "[]", "0s":
			f.DefValue = ""
		}
		f.Value = named{f.Value, name}
	})
}
