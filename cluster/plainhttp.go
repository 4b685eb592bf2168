package cluster

import (
	"fmt"
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

// memberWarnings: one line per member serving plain HTTP off loopback.
func memberWarnings(members []Member) []string {
	var out []string
	for _, m := range members {
		if PlainRemoteURL(m.APIURL) {
			out = append(out, fmt.Sprintf("%s serves the LAPI over plain HTTP on a non-loopback address (%s): credentials and API keys cross the network in clear", m.ID, m.APIURL))
		}
	}
	return out
}
