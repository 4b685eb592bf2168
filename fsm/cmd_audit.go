package fsm

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"
)

// The audit trail (issue 15): who changed what, replicated like any other
// state so that every node shows the same trail. A record is appended by
// AuditAppend; its time is the entry's (the leader's clock), never the
// caller's, and its raft index is kept with it. Only the last AuditCap
// records are kept (a bounded ring): the trail is for operators looking at
// recent changes, not an archive (ship the logs for that).

// CmdAuditAppend appends one audit record. Numbered apart from the iota
// block (like the usage commands) so that types other branches append
// cannot collide; feature-gated.
const CmdAuditAppend CmdType = 58

// Bounds of an audit record (Validate). Every field is one line of text:
// valid UTF-8 without control characters (no newline, no escape sequence
// reaches a terminal or a page).
const (
	// AuditCap is how many records the ring keeps (the oldest is dropped).
	AuditCap = 10_000
	// MaxAuditNode bounds the node ID, MaxAuditWho the identity (e.g.
	// "cert:alice", "cli:uid=0"), MaxAuditAction the verb, MaxAuditTarget
	// what was changed (a decision ID, an IP, a name), MaxAuditDetail the
	// free text. A record is at most ~3.5 KiB, the ring ~35 MiB at worst
	// (real records are a few hundred bytes).
	MaxAuditNode   = 128
	MaxAuditWho    = 256
	MaxAuditAction = 64
	MaxAuditTarget = 1024
	MaxAuditDetail = 2048
)

// auditChunk is the size of the ring's blocks (auditLog).
const auditChunk = 256

// AuditAppend is the body of CmdAuditAppend. Node is the node where the
// change was made, Who the signed-in identity that made it, Action a short
// verb ("decision.add", "unban"), Target what it was applied to, Detail
// anything else worth a line.
type AuditAppend struct {
	Node   string `json:"node"`
	Who    string `json:"who"`
	Action string `json:"action"`
	Target string `json:"target,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// AuditRecord is one stored audit record: the body plus the entry's time
// (the leader's clock, UTC) and raft index. Immutable once stored.
type AuditRecord struct {
	Time   time.Time `json:"time"`
	Index  uint64    `json:"index"`
	Node   string    `json:"node"`
	Who    string    `json:"who"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Validate bounds a record (whatever a peer sends is validated): node, who
// and action are required; every field is a bounded line of text.
func (b AuditAppend) Validate() error {
	var k checker
	k.auditLine("node", b.Node, MaxAuditNode, true)
	k.auditLine("who", b.Who, MaxAuditWho, true)
	k.auditLine("action", b.Action, MaxAuditAction, true)
	k.auditLine("target", b.Target, MaxAuditTarget, false)
	k.auditLine("detail", b.Detail, MaxAuditDetail, false)
	return k.err
}

// auditLine checks one line of text: at most limit bytes of valid UTF-8
// without control characters (C0, DEL, C1).
func (k *checker) auditLine(field, v string, limit int, required bool) {
	switch {
	case v == "":
		if required {
			k.fail(field, "is required")
		}
	case len(v) > limit:
		k.fail(field, "longer than %d bytes", limit)
	case !utf8.ValidString(v):
		k.fail(field, "is not valid UTF-8")
	default:
		for _, r := range v {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				k.fail(field, "contains a control character")
				return
			}
		}
	}
}

// auditAppend stores a record with the entry's time and index (apply).
func (s *state) auditAppend(e entryCtx, b *AuditAppend) *Result {
	s.audit = s.audit.add(&AuditRecord{Time: time.Unix(0, e.now).UTC(), Index: e.index,
		Node: b.Node, Who: b.Who, Action: b.Action, Target: b.Target, Detail: b.Detail})
	return &Result{N: 1}
}

// auditLog is the ring of the last AuditCap records, oldest first, in
// blocks of auditChunk. It is a value shared by published states: add
// never writes anything a published copy can see. The block list (at most
// AuditCap/auditChunk+2 headers) is copied on every add; a record is
// appended past the end of the last block's length (no published header
// covers that slot); the oldest block is dropped whole once all its
// records are past the cap, so at most auditChunk-1 dropped records stay
// in memory.
type auditLog struct {
	blocks [][]*AuditRecord
	skip   int // records of blocks[0] already dropped
	n      int // records held
}

// add returns the log with r appended (the receiver is left unchanged).
func (l auditLog) add(r *AuditRecord) auditLog {
	bs := slices.Clone(l.blocks)
	if len(bs) == 0 || len(bs[len(bs)-1]) == auditChunk {
		bs = append(bs, make([]*AuditRecord, 0, auditChunk))
	}
	last := len(bs) - 1
	bs[last] = append(bs[last], r)
	l.blocks, l.n = bs, l.n+1
	if l.n > AuditCap {
		l.n--
		l.skip++
		if l.skip == len(l.blocks[0]) {
			l.blocks, l.skip = l.blocks[1:], 0
		}
	}
	return l
}

// each calls fn on the records, oldest first, until it returns false.
func (l auditLog) each(fn func(*AuditRecord) bool) {
	for i, b := range l.blocks {
		if i == 0 {
			b = b[l.skip:]
		}
		for _, r := range b {
			if !fn(r) {
				return
			}
		}
	}
}

// newest returns up to limit records, newest first (limit <= 0: all).
func (l auditLog) newest(limit int) []AuditRecord {
	if limit <= 0 || limit > l.n {
		limit = l.n
	}
	out := make([]AuditRecord, 0, limit)
	for i := len(l.blocks) - 1; i >= 0 && len(out) < limit; i-- {
		b := l.blocks[i]
		lo := 0
		if i == 0 {
			lo = l.skip
		}
		for j := len(b) - 1; j >= lo && len(out) < limit; j-- {
			out = append(out, *b[j])
		}
	}
	return out
}

// restoreAudit takes an audit record of a snapshot: bounded like a
// command (a snapshot comes from a peer), appended to the ring.
func (s *state) restoreAudit(r *AuditRecord) error {
	b := AuditAppend{Node: r.Node, Who: r.Who, Action: r.Action, Target: r.Target, Detail: r.Detail}
	if err := b.Validate(); err != nil {
		return fmt.Errorf("restore: audit record: %w", err)
	}
	rec := *r
	rec.Time = rec.Time.UTC()
	// a time the next snapshot could not write (an offset that moves it
	// past year 9999 in UTC) is refused here rather than there
	if _, err := rec.Time.MarshalJSON(); err != nil {
		return fmt.Errorf("restore: audit record: time: %w", err)
	}
	s.audit = s.audit.add(&rec)
	return nil
}

// AuditLog returns up to limit audit records, newest first (limit <= 0:
// every record kept, at most AuditCap).
func (f *FSM) AuditLog(limit int) []AuditRecord { return f.read().audit.newest(limit) }

// AuditLen is the number of audit records kept.
func (f *FSM) AuditLen() int { return f.read().audit.n }
