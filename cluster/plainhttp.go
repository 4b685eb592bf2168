package cluster

import (
	"net"
	"net/url"
)

// PlainRemoteURL reports whether apiURL is plain HTTP on an address that
// is not loopback (serve --plain-http --allow-plain-http-remote): machine
// passwords, tokens and bouncer keys cross the network in clear.
func PlainRemoteURL(apiURL string) bool {
	u, err := url.Parse(apiURL)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// WildcardURL reports whether apiURL names a wildcard address (0.0.0.0,
// ::): a node listening on every interface without --api-advertise;
// clients on other hosts cannot use it.
func WildcardURL(apiURL string) bool {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return u.Hostname() == "" || (ip != nil && ip.IsUnspecified())
}
