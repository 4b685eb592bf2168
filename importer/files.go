package importer

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/halapi/halapi/capi"
	"github.com/halapi/halapi/lapi/profiles"
	"gopkg.in/yaml.v3"
)

// ReadLocalFiles reads the CAPI credentials (online_api_credentials.yaml)
// into src and checks the node-local files, console.yaml and
// profiles.yaml (+ .local): they are node settings that `halapi serve
// --crowdsec-config` uses, so the report only says whether they load and
// how to use them.
func ReadLocalFiles(cfg *Config, src *Source) Report {
	var extra Report
	if cfg.CredentialsPath != "" {
		c, err := capi.LoadCredentials(cfg.CredentialsPath)
		switch {
		case errors.Is(err, os.ErrNotExist):
			extra.Skip(KindCAPI, cfg.CredentialsPath, "file not found")
		case err != nil:
			extra.Skip(KindCAPI, cfg.CredentialsPath, err.Error())
		default:
			src.CAPI = &Credentials{URL: c.URL, Login: c.Login, Password: c.Password, PapiURL: c.PapiURL}
		}
	}
	if b, err := os.ReadFile(cfg.ConsolePath); err == nil {
		var opts map[string]*bool
		if err := yaml.Unmarshal(b, &opts); err != nil {
			extra.Skip(KindConsole, cfg.ConsolePath, err.Error())
		} else {
			var flags []string
			for _, k := range []string{"share_manual_decisions", "share_custom", "share_tainted", "share_context", "console_management"} {
				if v := opts[k]; v != nil {
					flag := "--console-" + strings.ReplaceAll(k, "_", "-")
					if k == "console_management" {
						flag = "--console-management"
					}
					flags = append(flags, fmt.Sprintf("%s=%v", flag, *v))
				}
			}
			extra.Present(KindConsole)
			extra.Notes = append(extra.Notes, fmt.Sprintf("console options (%s) are node settings: halapi serve --crowdsec-config reads them, or give %s",
				cfg.ConsolePath, strings.Join(flags, " ")))
		}
	}
	if _, err := os.Stat(cfg.ProfilesPath); err == nil {
		ps, err := profiles.Load(cfg.ProfilesPath)
		if err != nil {
			extra.Skip(KindProfiles, cfg.ProfilesPath, "does not load in halapi: "+err.Error())
		} else {
			extra.Present(KindProfiles)
			extra.Notes = append(extra.Notes, fmt.Sprintf("%d profiles of %s (and .local) load in halapi; they are node settings: halapi serve --crowdsec-config (or --profiles %s) uses them",
				len(ps), cfg.ProfilesPath, cfg.ProfilesPath))
		}
	}
	return extra
}
