package fsm

import (
	"encoding/json"
)

// Notifications (issue 11): which notification plugins an alert must be sent
// to is decided by the profiles when the alert is pushed and stored with the
// alert (Alert.Notify); the leader's dispatcher walks stored alerts after a
// replicated cursor per notification name and advances it with NotifyCursor
// after each delivered (or given up) batch. The cursors live in the
// replicated settings (keys NotifyKeyPrefix+name), so they are snapshotted
// and restored with the rest of the config.

// CmdNotifyCursor advances a notification cursor. Numbered apart from the
// iota block (like the usage commands) so that types other branches append
// cannot collide with it. Outside the baseline: feature-gated.
const CmdNotifyCursor CmdType = 56

// NotifyKeyPrefix prefixes the replicated setting of each notification
// cursor (the value is a NotifyState in JSON).
const NotifyKeyPrefix = "notify:cursor:"

// Bounds of the notification data an alert carries.
const (
	// MaxAlertNotify bounds the notification names one alert carries.
	MaxAlertNotify = 64
	// MaxNotifyName bounds a notification name.
	MaxNotifyName = 255
	// maxNotifyError bounds the last error kept with a cursor.
	maxNotifyError = 1024
)

// AlertNotify names one notification an alert must be sent to, as a
// matching profile listed it. The profile that gave the alert its
// decisions may come after the one that listed this notification: the
// reference then sends the alert as it was when that profile matched,
// without decisions; NoDecisions records that.
type AlertNotify struct {
	Name        string `json:"n"`
	NoDecisions bool   `json:"nd,omitempty"`
}

// NotifyState is the replicated state of one notification name.
type NotifyState struct {
	// Cursor is the highest alert ID handled (sent, given up or skipped).
	Cursor int64 `json:"cursor"`
	// Sent counts the alerts delivered, Lost those given up after the
	// retries; Batches counts the Notify calls that delivered.
	Sent    int64 `json:"sent,omitempty"`
	Lost    int64 `json:"lost,omitempty"`
	Batches int64 `json:"batches,omitempty"`
	// LastSent is the leader time of the last delivery (unix ns);
	// LastError the last delivery error, if the last batch was lost.
	LastSent  int64  `json:"last_sent,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// UpdatedAt is the time of the last advance (unix ns).
	UpdatedAt int64 `json:"updated_at,omitempty"`
	// InFlight, when above Cursor, is the last alert of a batch the
	// leader started to send and has not recorded yet: a successor that
	// finds it knows that batch may be delivered twice, and says so.
	InFlight int64 `json:"in_flight,omitempty"`
}

// NotifyCursor moves the cursor of notification Name forward to Cursor
// (never back: a stale leader's late write changes nothing) and adds the
// batch outcome to the counters.
type NotifyCursor struct {
	Name   string `json:"name"`
	Cursor int64  `json:"cursor"`
	// Sent and Lost are the alerts of this advance delivered and lost;
	// Batches the Notify calls that delivered them.
	Sent    int64  `json:"sent,omitempty"`
	Lost    int64  `json:"lost,omitempty"`
	Batches int64  `json:"batches,omitempty"`
	Error   string `json:"error,omitempty"`
	// InFlight announces a batch about to be sent (alerts up to it);
	// every advance sets it (0 clears it).
	InFlight int64 `json:"in_flight,omitempty"`
}

// Validate bounds a cursor advance (whatever a peer sends is validated).
func (b NotifyCursor) Validate() error {
	var k checker
	k.notifyName("name", b.Name)
	k.nonNeg("cursor", b.Cursor)
	k.nonNeg("sent", b.Sent)
	k.nonNeg("lost", b.Lost)
	k.nonNeg("batches", b.Batches)
	k.nonNeg("in_flight", b.InFlight)
	if k.err == nil && b.Sent+b.Lost > int64(MaxItemsPerEntry) {
		k.fail("sent", "sent+lost above %d", MaxItemsPerEntry)
	}
	if k.err == nil && len(b.Error) > maxNotifyError {
		k.fail("error", "longer than %d bytes", maxNotifyError)
	}
	return k.err
}

func (k *checker) notifyName(field, v string) {
	k.name(field, v, true)
	if k.err == nil && len(v) > MaxNotifyName {
		k.fail(field, "longer than %d bytes", MaxNotifyName)
	}
}

// notify checks the notification names of a stored alert.
func (k *checker) notify(ns []AlertNotify) {
	k.count("notify", len(ns), MaxAlertNotify)
	for i := range ns {
		if k.err != nil {
			return
		}
		k.at("notify", i)
		k.notifyName("n", ns[i].Name)
		k.out()
	}
}

func (s *state) notifyCursor(e entryCtx, b *NotifyCursor) *Result {
	now := e.now
	key := NotifyKeyPrefix + b.Name
	var st NotifyState
	if old, ok := s.config[key]; ok {
		_ = json.Unmarshal(old, &st) // written by this function only
	}
	if b.Sent < 0 || b.Lost < 0 || b.Batches < 0 {
		// never committed by a validating leader; stay total anyway
		return fail(CodeInvalid, "negative counters")
	}
	moved := b.Cursor > st.Cursor
	if moved {
		st.Cursor = b.Cursor
	}
	st.Sent += b.Sent
	st.Lost += b.Lost
	st.Batches += b.Batches
	if b.Sent > 0 {
		st.LastSent = now
	}
	if b.Lost > 0 {
		st.LastError = b.Error
	} else if b.Sent > 0 {
		st.LastError = ""
	}
	st.InFlight = b.InFlight
	st.UpdatedAt = now
	v, err := json.Marshal(st)
	if err != nil {
		return fail(CodeInternal, "encode notification state: %v", err)
	}
	s.wConfig()[key] = v
	if moved {
		return &Result{N: 1}
	}
	return &Result{}
}
