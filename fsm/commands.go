package fsm

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

// Command types of usage metrics (cmd_usage.go). Numbered apart from the iota
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
	gated(CmdNotifyCursor, (*state).notifyCursor),
	gated(CmdProfilesSet, (*state).profilesSet),
	gated(CmdAuditAppend, (*state).auditAppend),
	gated(CmdImportList, (*state).importList).withFast(func(b []byte) (any, bool) { return fastImportList(b) }),
)
