package main

import (
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/halapi/halapi/agent"
)

// The API URL a node advertises: gossiped to the other members, shown by
// `halapi cluster status`, served by the members route (/halapi/v1/members)
// that `halapi agent` learns the cluster's nodes from, and written by
// `machines add -f` (api-info). --api-advertise sets it; without it, it is
// the --listen address, which is only usable by other hosts when it is
// specific: a wildcard listen (0.0.0.0, ::, no host) without
// --api-advertise keeps advertising the wildcard URL (which agents skip)
// and logs a warning at startup.

// apiAdvertise is the outcome of resolveAPIAdvertise.
type apiAdvertise struct {
	URL string // scheme://host:port/
	// SAN is the advertised host, for the node certificate (empty: derived
	// from --listen, whose host is in the certificate already).
	SAN string
	// Warning is set when the URL is not usable by other hosts.
	Warning string
}

// resolveAPIAdvertise returns the API URL a node serving scheme on listen
// advertises, given --api-advertise (advertise, may be empty).
func resolveAPIAdvertise(scheme, listen, advertise string) (apiAdvertise, error) {
	if strings.TrimSpace(advertise) == "" {
		out := apiAdvertise{URL: scheme + "://" + listen + "/"}
		if wildcardHost(listen) {
			out.Warning = fmt.Sprintf("--listen %s is a wildcard address and --api-advertise is not set: the API URL this node advertises (%s, in the member list `halapi agent` reads and in `halapi cluster status`) is not usable by other hosts; set --api-advertise %s://HOST:PORT/ to the address clients reach this node at", listen, out.URL, scheme)
		}
		return out, nil
	}
	u, err := agent.ParseNodeURL(advertise)
	if err != nil {
		return apiAdvertise{}, fmt.Errorf("--api-advertise %q: %w", advertise, err)
	}
	if u.Scheme != scheme {
		return apiAdvertise{}, fmt.Errorf("--api-advertise %q: this node serves %s on --listen, the URL must say %s://", advertise, scheme, scheme)
	}
	return apiAdvertise{URL: u.String() + "/", SAN: u.Hostname()}, nil
}

// wildcardHost reports a listen address on every interface.
func wildcardHost(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// applyAPIAdvertise resolves --api-advertise for serve: it logs the
// warning, puts the advertised host in the node certificate's names, and
// returns the URL to advertise.
func applyAPIAdvertise(f *serveFlags, scheme string, logger *slog.Logger) (string, error) {
	adv, err := resolveAPIAdvertise(scheme, f.listen, f.apiAdvertise)
	if err != nil {
		return "", err
	}
	if adv.Warning != "" {
		logger.Warn(adv.Warning)
	}
	if adv.SAN != "" { // --api-advertise given
		f.apiAdvertise = adv.URL
		have := false
		for _, n := range f.pki.apiNames {
			have = have || strings.EqualFold(strings.TrimSpace(n), adv.SAN)
		}
		if !have {
			f.pki.apiNames = append(f.pki.apiNames, adv.SAN)
		}
	}
	return adv.URL, nil
}
