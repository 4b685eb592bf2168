package agent

import (
	"net"
	"strings"
	"testing"
)

// The member list is input from the network: whatever parseNodeURL
// accepts is a plain scheme://host:port with a usable host.
func FuzzParseNodeURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8080/", "https://lapi.example:443", "http://[::1]:1/", "http://0.0.0.0:1/",
		"http://u@h:1/", "ftp://h/", "http://h:1/x", "http://h", "https://h:1/?q", " http://h:1/ ", "http://%zz/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := parseNodeURL(s)
		if err != nil {
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			t.Fatalf("%q: scheme %q", s, u.Scheme)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil || host == "" || port == "" {
			t.Fatalf("%q: host %q (%v)", s, u.Host, err)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			t.Fatalf("%q: unspecified host accepted", s)
		}
		if u.User != nil || u.Path != "" || u.RawQuery != "" || strings.ContainsAny(u.Host, "/?#@") {
			t.Fatalf("%q: accepted as %#v", s, u)
		}
	})
}
