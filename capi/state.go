package capi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/halapi/halapi/fsm"
)

// Replicated CAPI state: fsm.SetConfig keys. Values are JSON except the
// token (the raw JWT, as CrowdSec's apic_token config item).
const (
	// KeyCredentials holds storedCredentials.
	KeyCredentials = "capi:credentials"
	// KeyToken holds the cached CAPI JWT.
	KeyToken = "capi:token"
	// KeyPush holds pushState (the signal push cursor).
	KeyPush = "capi:push"
	// KeyPull holds pullState (last pull, blocklist last-pull times).
	KeyPull = "capi:pull"
	// KeyRegisterRequest holds a registerRequest made on any node and
	// served by the leader.
	KeyRegisterRequest = "capi:register_request"
	// KeyImported holds the fingerprint of the last imported credentials
	// file, so a file given on the command line is imported once and does
	// not undo a later registration.
	KeyImported = "capi:imported"
)

type storedCredentials struct {
	Credentials
	// Registered is always true: credentials are stored once CAPI accepted
	// them (pending ones live in the registration request).
	Registered bool   `json:"registered"`
	Source     string `json:"source"` // "file" or "register"
	UpdatedAt  int64  `json:"updated_at"`
}

type pushState struct {
	// Cursor is the highest alert ID handled (pushed or skipped).
	Cursor int64 `json:"cursor"`
	// LastPush is when the last batch was accepted (unix ns).
	LastPush int64 `json:"last_push,omitempty"`
	// Pushed counts the signals accepted by CAPI.
	Pushed int64 `json:"pushed,omitempty"`
}

type blocklistState struct {
	// LastPull is the If-Modified-Since value of the next download (HTTP
	// date): the list's Last-Modified, else the download time.
	LastPull string `json:"last_pull"`
	// Count is the number of decisions stored from the last download.
	Count int `json:"count"`
	// AlertID is the alert holding them.
	AlertID int64 `json:"alert_id"`
}

type pullState struct {
	LastPull    int64                     `json:"last_pull,omitempty"`
	LastNew     int                       `json:"last_new"`
	LastDeleted int                       `json:"last_deleted"`
	Blocklists  map[string]blocklistState `json:"blocklists,omitempty"`
}

type registerRequest struct {
	Force     bool   `json:"force,omitempty"`
	At        int64  `json:"at"`
	LastError string `json:"last_error,omitempty"`
	// Pending are the credentials being registered (chosen once).
	Pending *Credentials `json:"pending,omitempty"`
}

func readJSON(f *fsm.FSM, key string, v any) bool {
	b := f.Config(key)
	if b == nil {
		return false
	}
	return json.Unmarshal(b, v) == nil
}

func readCredentials(f *fsm.FSM) *storedCredentials {
	var c storedCredentials
	if !readJSON(f, KeyCredentials, &c) || c.Login == "" {
		return nil
	}
	return &c
}

func readPush(f *fsm.FSM) (pushState, bool) {
	var p pushState
	ok := readJSON(f, KeyPush, &p)
	return p, ok
}

func readPull(f *fsm.FSM) pullState {
	var p pullState
	readJSON(f, KeyPull, &p)
	if p.Blocklists == nil {
		p.Blocklists = map[string]blocklistState{}
	}
	return p
}

func fingerprint(c Credentials) string {
	h := sha256.Sum256([]byte(c.URL + "\x00" + c.Login + "\x00" + c.Password))
	return hex.EncodeToString(h[:])
}
