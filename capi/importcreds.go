package capi

import (
	"encoding/json"

	"github.com/halapi/halapi/fsm"
)

// CredentialsImport is what storing credentials read from a CrowdSec LAPI
// (`halapi import`) takes. Present: the cluster holds these credentials
// already. Other: the login of different credentials the cluster holds
// (they are not replaced). Sets: the replicated settings to write
// otherwise, the same ones `serve --capi-credentials` writes for the same
// file (so that flag given later with that file changes nothing).
type CredentialsImport struct {
	Present bool
	Other   string
	Sets    []fsm.SetConfig
}

// PlanCredentialsImport compares credentials with the replicated state.
func PlanCredentialsImport(f *fsm.FSM, c Credentials, now int64) CredentialsImport {
	if c.PapiURL == "" {
		c.PapiURL = DefaultPapiURL
	}
	fp := fingerprint(c)
	old := readCredentials(f)
	if old != nil && fingerprint(old.Credentials) == fp {
		if string(f.Config(KeyImported)) == fp {
			return CredentialsImport{Present: true}
		}
		return CredentialsImport{Present: true, Sets: []fsm.SetConfig{{Key: KeyImported, Value: []byte(fp)}}}
	}
	if old != nil {
		return CredentialsImport{Other: old.Login}
	}
	b, _ := json.Marshal(storedCredentials{Credentials: c, Registered: true, Source: "file", UpdatedAt: now})
	return CredentialsImport{Sets: []fsm.SetConfig{
		{Key: KeyCredentials, Value: b},
		{Key: KeyToken},
		{Key: KeyImported, Value: []byte(fp)},
	}}
}
