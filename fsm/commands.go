package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// CmdType is the one-byte type in front of every log entry.
type CmdType uint8

// IgnorableFlag marks a command type that an older node which does not know
// it may skip safely (state that only helps, such as cursors). Unknown types
// without the flag stop the node rather than let its state diverge.
const IgnorableFlag CmdType = 0x80

// Command types. Never renumber: they are in every raft log.
const (
	CmdSetJWTKey CmdType = iota + 1
	CmdMachineCreate
	CmdMachineUpdate
	CmdMachineDelete
	CmdBouncerCreate
	CmdBouncerUpdate
	CmdBouncerDelete
	CmdAlertsCreate
	CmdAlertsDelete
	CmdDecisionsExpire
	CmdFlush
	CmdAllowlistCreate
	CmdAllowlistDelete
	CmdAllowlistAdd
	CmdAllowlistRemove
	CmdSetConfig
	CmdImportDecisions
	CmdExpireByValue
	CmdExpireSet
	CmdAllowlistReplace
	// CmdAutoDelete is outside the baseline (feature-gated).
	CmdAutoDelete
	// CmdTouch carries coalesced "last seen" data and stream cursors.
	CmdTouch = IgnorableFlag | 1
)

// Command types of usage metrics (usage.go). Numbered apart from the iota
// block so that command types other branches append cannot collide with
// them.
const (
	CmdUsageAdd   CmdType = 48
	CmdUsageSent  CmdType = 49
	CmdUsageFlush CmdType = 50
)

// commands is the registry (registry.go): one line a command type, its
// body type inferred from its apply function. To add a command: a type
// constant above (never renumber, never reuse), a body type with a
// Validate method, an apply function func(*state, entryCtx, *Body)
// *Result, and a gated(...) line here; snapshot/restore any new state.
var commands = mustRegistry(
	baseline(CmdSetJWTKey, (*state).setJWTKey),
	baseline(CmdMachineCreate, (*state).machineCreate),
	baseline(CmdMachineUpdate, (*state).machineUpdate),
	baseline(CmdMachineDelete, (*state).machineDelete),
	baseline(CmdBouncerCreate, (*state).bouncerCreate),
	baseline(CmdBouncerUpdate, (*state).bouncerUpdate),
	baseline(CmdBouncerDelete, (*state).bouncerDelete),
	baseline(CmdAlertsCreate, (*state).alertsCreate),
	baseline(CmdAlertsDelete, (*state).alertsDelete),
	baseline(CmdDecisionsExpire, (*state).decisionsExpire),
	baseline(CmdFlush, (*state).flush),
	baseline(CmdAllowlistCreate, (*state).allowlistCreate),
	baseline(CmdAllowlistDelete, (*state).allowlistDelete),
	baseline(CmdAllowlistAdd, (*state).allowlistAdd),
	baseline(CmdAllowlistRemove, (*state).allowlistRemove),
	baseline(CmdSetConfig, (*state).setConfig),
	// big lists: most of the cost of applying them is the decode
	baseline(CmdImportDecisions, (*state).importDecisions).withFast(func(b []byte) (any, bool) { return fastImport(b) }),
	baseline(CmdExpireByValue, (*state).expireByValue),
	baseline(CmdExpireSet, (*state).expireSet),
	baseline(CmdAllowlistReplace, (*state).allowlistReplace),
	baseline(CmdTouch, (*state).touch),
	gated(CmdAutoDelete, (*state).autoDelete),
	gated(CmdUsageAdd, (*state).usageAdd),
	gated(CmdUsageSent, (*state).usageSent),
	gated(CmdUsageFlush, (*state).usageFlush),
)

// Entry formats: 1 = [1][type][time:8][JSON]; 2 adds a request ID:
// [2][type][time:8][idlen:1][id][JSON]. Both are decoded.
const (
	formatV1 = 1
	formatV2 = 2
)

// Command is a typed state change. Time is stamped by the leader (unix
// nanoseconds) and is the only clock the FSM ever reads.
type Command struct {
	Type CmdType
	Time int64
	// ID, when set, makes the command idempotent: an entry whose ID was
	// applied recently is not applied again, its first result is returned
	// (a write retried after a lost answer or a leader change).
	ID   string
	Body any
}

// Encode returns the log entry bytes: version, type, 8-byte time, JSON body.
func (c Command) Encode() ([]byte, error) {
	body, err := encodeBody(c.Body)
	if err != nil {
		return nil, err
	}
	if len(c.ID) > 255 {
		return nil, errors.New("command ID longer than 255 bytes")
	}
	if c.ID == "" {
		buf := make([]byte, 10, 10+len(body))
		buf[0] = formatV1
		buf[1] = byte(c.Type)
		binary.BigEndian.PutUint64(buf[2:], uint64(c.Time))
		return append(buf, body...), nil
	}
	buf := make([]byte, 11, 11+len(c.ID)+len(body))
	buf[0] = formatV2
	buf[1] = byte(c.Type)
	binary.BigEndian.PutUint64(buf[2:], uint64(c.Time))
	buf[10] = byte(len(c.ID))
	buf = append(buf, c.ID...)
	return append(buf, body...), nil
}

// StampTime overwrites the time of an encoded command (the leader does this
// just before it appends the entry, so all time comes from one clock).
func StampTime(entry []byte, t int64) {
	if len(entry) >= 10 {
		binary.BigEndian.PutUint64(entry[2:], uint64(t))
	}
}

// Bodies.

type SetJWTKey struct {
	Key []byte `json:"key"`
}

type MachineCreate struct {
	Machine Machine `json:"machine"`
	// Force overwrites the password (and validates) an existing machine.
	Force bool `json:"force,omitempty"`
}

// MachineUpdate patches a machine; nil fields are left alone.
type MachineUpdate struct {
	ID           string  `json:"id"`
	Validated    *bool   `json:"validated,omitempty"`
	Scenarios    *string `json:"scenarios,omitempty"`
	IP           *string `json:"ip,omitempty"`
	Version      *string `json:"version,omitempty"`
	OSName       *string `json:"os_name,omitempty"`
	OSVersion    *string `json:"os_version,omitempty"`
	FeatureFlags *string `json:"feature_flags,omitempty"`
	HubState     []byte  `json:"hubstate,omitempty"`
	Datasources  []byte  `json:"datasources,omitempty"`
}

type MachineDelete struct {
	IDs []string `json:"ids"`
}

type BouncerCreate struct {
	Bouncer Bouncer `json:"bouncer"`
}

// BouncerUpdate patches a bouncer; nil fields are left alone.
type BouncerUpdate struct {
	Name         string  `json:"name"`
	IP           *string `json:"ip,omitempty"`
	Type         *string `json:"type,omitempty"`
	Version      *string `json:"version,omitempty"`
	OSName       *string `json:"os_name,omitempty"`
	OSVersion    *string `json:"os_version,omitempty"`
	FeatureFlags *string `json:"feature_flags,omitempty"`
}

type BouncerDelete struct {
	Names []string `json:"names"`
}

// NewAlert is an alert with its decisions, IDs not yet assigned.
type NewAlert struct {
	Alert     Alert      `json:"alert"`
	Decisions []Decision `json:"decisions,omitempty"`
}

type AlertsCreate struct {
	MachineID string     `json:"machine_id"`
	Alerts    []NewAlert `json:"alerts"`
}

// AlertsDelete deletes alerts by ID, or every alert matching Filter (the
// filter is evaluated when the entry is applied, on the replicated state,
// with the entry's time — never on a node's possibly stale copy).
// MustExist makes a missing ID an ErrNotFound.
type AlertsDelete struct {
	IDs       []int64      `json:"ids,omitempty"`
	Filter    *AlertFilter `json:"filter,omitempty"`
	MustExist bool         `json:"must_exist,omitempty"`
}

// DecisionsExpire soft-expires decisions by ID, or the active decisions
// matching Filter (evaluated at apply time, like AlertsDelete).
type DecisionsExpire struct {
	IDs       []int64         `json:"ids,omitempty"`
	Filter    *DecisionFilter `json:"filter,omitempty"`
	MustExist bool            `json:"must_exist,omitempty"`
}

type Flush struct {
	MaxAge   int64 `json:"max_age,omitempty"` // nanoseconds, 0 = off
	MaxItems int   `json:"max_items,omitempty"`
}

type AllowlistCreate struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

type AllowlistDelete struct {
	Name string `json:"name"`
}

type AllowlistAdd struct {
	Name  string          `json:"name"`
	Items []AllowlistItem `json:"items"`
}

type AllowlistRemove struct {
	Name   string   `json:"name"`
	Values []string `json:"values"`
}

// SetConfig stores (or with an empty Value deletes) a replicated setting:
// CAPI credentials and token, push cursors, last-pull times.
type SetConfig struct {
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
	// IfAbsent makes the write a first-writer-wins claim (one-time tokens):
	// Result.N is 1 when this command set the key, 0 when it existed.
	IfAbsent bool `json:"if_absent,omitempty"`
}

// ImportDecisions stores a chunk of pulled decisions (CAPI, blocklists)
// the way CrowdSec does: existing decisions of the same origin with the
// same value on another alert are replaced. With AlertID 0 a new alert is
// created from Alert (its ID is the result's first ID); otherwise the
// decisions are attached to that alert (later chunks of one pull).
type ImportDecisions struct {
	AlertID   int64      `json:"alert_id,omitempty"`
	Alert     Alert      `json:"alert"`
	Decisions []Decision `json:"decisions"`
}

// ValueRef names decisions by scope and value.
type ValueRef struct {
	Scope string `json:"scope"`
	Value string `json:"value"`
}

// ExpireByValue soft-expires the active decisions of Origin with these
// values (CAPI "deleted"); a scope other than ip must match exactly.
type ExpireByValue struct {
	Origin string     `json:"origin"`
	Items  []ValueRef `json:"items"`
}

// ExpireSet soft-expires the active decisions of Origin and Scenario that
// do not belong to KeepAlertID: what a fresh full download of a blocklist
// no longer contains.
type ExpireSet struct {
	Origin      string `json:"origin"`
	Scenario    string `json:"scenario"`
	KeepAlertID int64  `json:"keep_alert_id"`
}

// AllowlistReplace creates or replaces a console-managed allowlist
// (found by AllowlistID, else by Name) with exactly these items, then
// expires active decisions that an item covers or is covered by.
type AllowlistReplace struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	AllowlistID string          `json:"allowlist_id"`
	Items       []AllowlistItem `json:"items"`
}

// AutoDelete deletes the machines and bouncers not seen for longer than
// the given ages (nanoseconds, 0 = off), per auth type: CrowdSec's
// db_config.flush agents_autodelete (cert, login_password) and
// bouncers_autodelete (cert, api_key). The cutoff is the entry's time
// minus the age, evaluated at apply time on the replicated state. As in
// CrowdSec, a machine or bouncer never seen (no heartbeat, no pull) is
// kept, and so is a machine that owns alerts.
type AutoDelete struct {
	AgentsCert     int64 `json:"agents_cert,omitempty"`
	AgentsPassword int64 `json:"agents_password,omitempty"`
	BouncersCert   int64 `json:"bouncers_cert,omitempty"`
	BouncersAPIKey int64 `json:"bouncers_api_key,omitempty"`
}

// Touch carries coalesced last-seen times and stream cursors. Values only
// move forward.
type Touch struct {
	Machines []MachineTouch `json:"machines,omitempty"`
	Bouncers []BouncerTouch `json:"bouncers,omitempty"`
}

type MachineTouch struct {
	ID            string `json:"id"`
	LastHeartbeat int64  `json:"last_heartbeat,omitempty"`
}

type BouncerTouch struct {
	Name     string `json:"name"`
	LastPull int64  `json:"last_pull,omitempty"`
	Cursor   uint64 `json:"cursor,omitempty"`
}

// Decode parses a log entry.
func Decode(entry []byte) (Command, error) {
	if len(entry) < 10 {
		return Command{}, errors.New("short command")
	}
	c := Command{Type: CmdType(entry[1]), Time: int64(binary.BigEndian.Uint64(entry[2:10]))}
	rest := entry[10:]
	switch entry[0] {
	case formatV1:
	case formatV2:
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return c, errors.New("short command ID")
		}
		c.ID = string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
	default:
		return Command{}, fmt.Errorf("unsupported command format %d", entry[0])
	}
	cmd := commands.lookup(c.Type)
	if cmd == nil {
		return c, fmt.Errorf("unknown command type %d", c.Type)
	}
	if cmd.fast != nil {
		if b, ok := cmd.fast(rest); ok {
			c.Body = b
			return c, nil
		}
	}
	body, err := cmd.decode(rest)
	if err != nil {
		return c, fmt.Errorf("decode command %d: %w", c.Type, err)
	}
	c.Body = body
	return c, nil
}

// EntryClass says how Apply treats an entry that does not decode.
type EntryClass int

const (
	// EntryMalformed: a known format and type whose body does not decode,
	// or bytes no version ever wrote (too short, format 0). Skipped: every
	// node decodes the same bytes the same way, so all skip it alike.
	EntryMalformed EntryClass = iota
	// EntryUnknownIgnorable: a type this version does not know, marked
	// IgnorableFlag by the newer version that wrote it. Skipped.
	EntryUnknownIgnorable
	// EntryNewer: a type this version does not know without
	// IgnorableFlag, or a newer entry format. The node stops: applying or
	// skipping it could make its state diverge from upgraded nodes.
	EntryNewer
)

// EntryKind classifies an entry that failed to decode.
func EntryKind(entry []byte) EntryClass {
	if len(entry) < 2 || entry[0] == 0 {
		return EntryMalformed
	}
	if entry[0] > formatV2 {
		return EntryNewer
	}
	if commands.lookup(CmdType(entry[1])) != nil {
		return EntryMalformed
	}
	if CmdType(entry[1])&IgnorableFlag != 0 {
		return EntryUnknownIgnorable
	}
	return EntryNewer
}
