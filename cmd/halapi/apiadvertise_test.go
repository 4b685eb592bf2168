package main

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/halapi/halapi/agent"
)

func TestResolveAPIAdvertise(t *testing.T) {
	for _, tc := range []struct {
		scheme, listen, advertise string
		url, san                  string
		warn                      bool
		err                       string
	}{
		// default: the --listen address, usable when it is specific
		{scheme: "https", listen: "10.0.0.1:8080", url: "https://10.0.0.1:8080/"},
		{scheme: "http", listen: "127.0.0.1:8080", url: "http://127.0.0.1:8080/"},
		{scheme: "https", listen: "[fd00::1]:8080", url: "https://[fd00::1]:8080/"},
		{scheme: "https", listen: "lapi.example:8080", url: "https://lapi.example:8080/"},
		// a wildcard without --api-advertise: unchanged URL, and a warning
		{scheme: "https", listen: "0.0.0.0:8080", url: "https://0.0.0.0:8080/", warn: true},
		{scheme: "https", listen: "[::]:8080", url: "https://[::]:8080/", warn: true},
		{scheme: "https", listen: ":8080", url: "https://:8080/", warn: true},
		// --api-advertise: normalised, its host goes into the certificate
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://n1.example:8443", url: "https://n1.example:8443/", san: "n1.example"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: " https://n1.example:8443/ ", url: "https://n1.example:8443/", san: "n1.example"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://n1.example", url: "https://n1.example:443/", san: "n1.example"},
		{scheme: "http", listen: "127.0.0.1:8080", advertise: "http://localhost:8080/", url: "http://localhost:8080/", san: "localhost"},
		{scheme: "https", listen: "[::]:8080", advertise: "https://[fd00::2]:8080/", url: "https://[fd00::2]:8080/", san: "fd00::2"},
		// refused: clear errors
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "http://n1.example:8080/", err: "this node serves https"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "n1.example:8080", err: "scheme must be http or https"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://0.0.0.0:8080/", err: "unspecified address"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://[::]:8080/", err: "unspecified address"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://n1.example:8080/v1", err: "nothing else"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://u:p@n1.example:8080/", err: "nothing else"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://n1.example:8080/?a=b", err: "nothing else"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://n1.example:0/", err: "invalid port"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://n1.example:99999/", err: "invalid port"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://:8080/", err: "no host"},
		{scheme: "https", listen: "0.0.0.0:8080", advertise: "https://bad_name!:8080/", err: "invalid host"},
	} {
		got, err := resolveAPIAdvertise(tc.scheme, tc.listen, tc.advertise)
		name := tc.scheme + " " + tc.listen + " " + tc.advertise
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "--api-advertise") {
				t.Errorf("%s: err %v, want one naming --api-advertise and saying %q", name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got.URL != tc.url || got.SAN != tc.san || (got.Warning != "") != tc.warn {
			t.Errorf("%s: got %+v, want url %q san %q warning %v", name, got, tc.url, tc.san, tc.warn)
		}
		if tc.warn && !strings.Contains(got.Warning, "--api-advertise") {
			t.Errorf("%s: the warning does not name the flag: %s", name, got.Warning)
		}
		if tc.advertise != "" && tc.err == "" {
			// what it advertises, halapi agent accepts
			if _, err := agent.ParseNodeURL(got.URL); err != nil {
				t.Errorf("%s: advertised %q does not parse again: %v", name, got.URL, err)
			}
		}
	}
}

// TestServeAPIAdvertise: the flag and the config key reach serve's
// resolution, which warns for a wildcard listen, puts the advertised host
// in the certificate names once, and keeps the URL for api-info.
func TestServeAPIAdvertise(t *testing.T) {
	f, _, _, err := resolve(t, "--listen", "0.0.0.0:8080", "--api-advertise", "https://n1.example:8080", "--api-name", "N1.example")
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	u, err := applyAPIAdvertise(f, "https", logger)
	if err != nil || u != "https://n1.example:8080/" {
		t.Fatalf("url %q, err %v", u, err)
	}
	if f.apiAdvertise != u || !slices.Equal(f.pki.apiNames, []string{"N1.example"}) {
		t.Fatalf("api-info URL %q, names %q", f.apiAdvertise, f.pki.apiNames)
	}
	if logs.Len() != 0 {
		t.Fatalf("unexpected log: %s", logs.String())
	}

	f, _, _, err = resolve(t, "--listen", "0.0.0.0:8080", "--api-advertise", "https://10.0.0.1:8080/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := applyAPIAdvertise(f, "https", logger); err != nil || !slices.Equal(f.pki.apiNames, []string{"10.0.0.1"}) {
		t.Fatalf("names %q, err %v", f.pki.apiNames, err)
	}

	dir := t.TempDir()
	cfg := writeFile(t, dir, "halapi.yaml", "listen: 0.0.0.0:8080\n")
	f, _, _, err = resolve(t, "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	u, err = applyAPIAdvertise(f, "https", logger)
	if err != nil || u != "https://0.0.0.0:8080/" || f.apiAdvertise != "" {
		t.Fatalf("url %q, api-info %q, err %v", u, f.apiAdvertise, err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "--api-advertise") {
		t.Fatalf("no warning for a wildcard listen: %s", logs.String())
	}

	cfg = writeFile(t, dir, "bad.yaml", "api-advertise: ftp://n1:21/\n")
	f, _, _, err = resolve(t, "--config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := applyAPIAdvertise(f, "https", logger); err == nil || !strings.Contains(err.Error(), "--api-advertise") {
		t.Fatalf("a bad --api-advertise from the config file: %v", err)
	}
}
