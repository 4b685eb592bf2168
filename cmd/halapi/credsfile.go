package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/halapi/halapi/pki"
	"gopkg.in/yaml.v3"
)

// machineCredentials is CrowdSec's local_api_credentials.yaml for a
// password machine (csconfig.ApiCredentialsCfg: unknown keys are refused).
type machineCredentials struct {
	URL        string `yaml:"url"`
	Login      string `yaml:"login"`
	Password   string `yaml:"password"`
	CACertPath string `yaml:"ca_cert_path,omitempty"`
}

// CABundleFile is the name of the CA bundle written next to a credentials
// file when the node's HTTPS uses the built-in CA.
const CABundleFile = "halapi-ca.crt"

// credsTarget is where a credentials file points: URL and CA bundle.
type credsTarget struct {
	url, caPath string
	caPEM       []byte // written to caPath when set
	warn        []string
}

// resolveCredsTarget makes the credentials file work as written: the URL
// is the node's own (unless -u was given), and when the node's HTTPS
// certificate comes from the built-in CA, ca_cert_path names a CA bundle,
// written next to file (or, for "-", the node's own copy). It runs
// before the machine is created, so a bad -u creates nothing.
func resolveCredsTarget(o *adminOpts, file, apiURL string, urlGiven bool) (*credsTarget, error) {
	t := &credsTarget{url: apiURL}
	var info pki.APIInfo
	infoErr := o.call("GET", "/api-info", nil, nil, &info)
	if infoErr != nil {
		t.warn = append(t.warn, "cannot ask the node for its API URL ("+infoErr.Error()+"): check url and ca_cert_path in the file")
	}
	if !urlGiven && infoErr == nil && info.URL != "" {
		t.url = info.URL
	}
	u, err := url.Parse(t.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid -u %q: want http(s)://host:port/", t.url)
	}
	if infoErr == nil && u.Scheme != info.Scheme {
		t.warn = append(t.warn, fmt.Sprintf("this node serves %s, the file says %s (%s)", info.Scheme, u.Scheme, t.url))
	}
	if u.Scheme == "https" && info.BuiltinCA && info.CAPEM != "" {
		if file == "-" {
			t.caPath = info.CAFile
		} else {
			if t.caPath, err = filepath.Abs(filepath.Join(filepath.Dir(file), CABundleFile)); err != nil {
				return nil, err
			}
			t.caPEM = []byte(info.CAPEM)
		}
	}
	return t, nil
}

// file returns the credentials YAML, writing the CA bundle first.
func (t *credsTarget) file(login, password string) ([]byte, error) {
	if t.caPEM != nil {
		if err := os.WriteFile(t.caPath, t.caPEM, 0o644); err != nil {
			return nil, fmt.Errorf("write the CA bundle: %w", err)
		}
	}
	return yaml.Marshal(machineCredentials{URL: t.url, Login: login, Password: password, CACertPath: t.caPath})
}
