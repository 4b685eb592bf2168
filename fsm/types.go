package fsm

// Stored records. Every record is immutable once it is in the state: a
// change replaces the pointer with a modified copy (copy-on-write), so
// readers and snapshots can hold pointers without locks.

// Machine is a registered agent (watcher).
type Machine struct {
	ID            string `json:"id"`
	PasswordHash  []byte `json:"pw,omitempty"`
	IP            string `json:"ip,omitempty"`
	Validated     bool   `json:"validated,omitempty"`
	AuthType      string `json:"auth_type"`
	Scenarios     string `json:"scenarios,omitempty"`
	Version       string `json:"version,omitempty"`
	CreatedAt     int64  `json:"created_at"`
	UpdatedAt     int64  `json:"updated_at"`
	LastPush      int64  `json:"last_push,omitempty"`
	LastHeartbeat int64  `json:"last_heartbeat,omitempty"`
	OSName        string `json:"os_name,omitempty"`
	OSVersion     string `json:"os_version,omitempty"`
	FeatureFlags  string `json:"feature_flags,omitempty"`
	HubState      []byte `json:"hubstate,omitempty"`
	Datasources   []byte `json:"datasources,omitempty"`
	// Usage holds the usage metrics it sent (bounded: see cmd_usage.go).
	Usage []UsageRecord `json:"usage,omitempty"`
}

// Bouncer is a remediation component identified by an API key or a cert.
type Bouncer struct {
	Name        string `json:"name"`
	KeyHash     string `json:"key_hash"`
	Revoked     bool   `json:"revoked,omitempty"`
	IP          string `json:"ip,omitempty"`
	Type        string `json:"type,omitempty"`
	Version     string `json:"version,omitempty"`
	AuthType    string `json:"auth_type"`
	AutoCreated bool   `json:"auto_created,omitempty"`
	CreatedAt   int64  `json:"created_at"`
	UpdatedAt   int64  `json:"updated_at"`
	LastPull    int64  `json:"last_pull,omitempty"`
	// LastPullNode is the node that served the last pull (informational;
	// empty when unknown: written by an older node, or a cluster where
	// some voter is older than the field).
	LastPullNode string `json:"last_pull_node,omitempty"`
	OSName       string `json:"os_name,omitempty"`
	OSVersion    string `json:"os_version,omitempty"`
	FeatureFlags string `json:"feature_flags,omitempty"`
	// Cursor is the raft index up to which this bouncer's stream has been
	// served (new decisions created after it are "new" on the next pull).
	Cursor uint64 `json:"cursor,omitempty"`
	// Usage holds the usage metrics it sent (bounded: see cmd_usage.go).
	Usage []UsageRecord `json:"usage,omitempty"`
}

// Auth types, as CrowdSec names them.
const (
	AuthPassword = "password"
	AuthTLS      = "tls"
	AuthAPIKey   = "api-key"
)

// Source is where an alert comes from.
type Source struct {
	Scope     string  `json:"scope"`
	Value     string  `json:"value"`
	IP        string  `json:"ip,omitempty"`
	Range     string  `json:"range,omitempty"`
	AsNumber  string  `json:"as_number,omitempty"`
	AsName    string  `json:"as_name,omitempty"`
	Cn        string  `json:"cn,omitempty"`
	Latitude  float32 `json:"latitude,omitempty"`
	Longitude float32 `json:"longitude,omitempty"`
}

// KV is one metadata pair.
type KV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Event is one stored alert event; Meta is kept as the client sent it.
type Event struct {
	Timestamp int64 `json:"ts"`
	Meta      []KV  `json:"meta,omitempty"`
}

// Alert is a stored alert. Decisions are stored separately and linked by ID.
type Alert struct {
	ID              int64   `json:"id"`
	UUID            string  `json:"uuid,omitempty"`
	MachineID       string  `json:"machine_id,omitempty"`
	CreatedAt       int64   `json:"created_at"`
	Scenario        string  `json:"scenario"`
	ScenarioHash    string  `json:"scenario_hash,omitempty"`
	ScenarioVersion string  `json:"scenario_version,omitempty"`
	Message         string  `json:"message,omitempty"`
	Leakspeed       string  `json:"leakspeed,omitempty"`
	EventsCount     int32   `json:"events_count,omitempty"`
	Capacity        int32   `json:"capacity,omitempty"`
	StartAt         int64   `json:"start_at"`
	StopAt          int64   `json:"stop_at"`
	Simulated       bool    `json:"simulated,omitempty"`
	Remediation     bool    `json:"remediation,omitempty"`
	Source          Source  `json:"source"`
	Events          []Event `json:"events,omitempty"`
	Meta            []KV    `json:"meta,omitempty"`
	DecisionIDs     []int64 `json:"decision_ids,omitempty"`
	// Notify lists the notifications the alert must be sent to (fsm/notify.go).
	Notify []AlertNotify `json:"notify,omitempty"`
}

// Decision is a stored decision.
type Decision struct {
	ID        int64  `json:"id"`
	UUID      UUID   `json:"uuid,omitzero"`
	AlertID   int64  `json:"alert_id,omitempty"`
	Origin    string `json:"origin"`
	Type      string `json:"type"`
	Scope     string `json:"scope"`
	Value     string `json:"value"`
	Scenario  string `json:"scenario"`
	Simulated bool   `json:"simulated,omitempty"`
	CreatedAt int64  `json:"created_at"`
	// Until is when the decision stops being active (unix nanoseconds).
	Until int64 `json:"until"`
	// CreatedIndex is the raft index of the command that created it.
	CreatedIndex uint64 `json:"ci"`
	// DeletedIndex is the raft index of the command that expired it by hand
	// (0 when it was never soft-deleted).
	DeletedIndex uint64 `json:"di,omitempty"`
	// Range is the prefix of an IP-scoped value (zero for other scopes
	// and for values that do not parse).
	Range Prefix `json:"-"`
}

// Active reports whether the decision is active at now (until > now).
func (d *Decision) Active(now int64) bool { return d.Until > now }

// AllowlistItem is one value of an allowlist.
type AllowlistItem struct {
	Value      string  `json:"value"`
	Comment    string  `json:"comment,omitempty"`
	CreatedAt  int64   `json:"created_at"`
	Expiration int64   `json:"expiration,omitempty"`
	Range      IPRange `json:"-"`
}

// Allowlist is a named set of IPs and ranges that never get decisions.
type Allowlist struct {
	Name           string          `json:"name"`
	Description    string          `json:"description,omitempty"`
	AllowlistID    string          `json:"allowlist_id,omitempty"`
	ConsoleManaged bool            `json:"console_managed,omitempty"`
	CreatedAt      int64           `json:"created_at"`
	UpdatedAt      int64           `json:"updated_at"`
	Items          []AllowlistItem `json:"items,omitempty"`
}
