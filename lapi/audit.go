package lapi

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/halapi/halapi/fsm"
)

// The audit trail (fsm/cmd_audit.go): RecordAudit appends a record through
// raft (a follower forwards it to the leader like any write); the admin
// route GET /audit lists the records this node holds, newest first.

// DefaultAuditList is how many records GET /audit answers without a limit.
const DefaultAuditList = 100

// RecordAudit appends an audit record: who (the signed-in identity, e.g.
// "cert:alice", "link:alice", "cli:uid=0") did action (a short verb) to
// target, with detail. The node is this node's ID and the time the
// leader's, set when the entry is written. Every field is made one
// bounded line first (control characters become spaces, invalid UTF-8
// the replacement character, an overlong field is cut at a character
// boundary and ends with "…"), so a form's free text never loses the
// record; who and action must not be empty. It returns once the record is
// committed and applied on this node.
func (s *Server) RecordAudit(ctx context.Context, who, action, target, detail string) error {
	b := fsm.AuditAppend{
		Node:   auditLine(s.nodeID(), fsm.MaxAuditNode),
		Who:    auditLine(who, fsm.MaxAuditWho),
		Action: auditLine(action, fsm.MaxAuditAction),
		Target: auditLine(target, fsm.MaxAuditTarget),
		Detail: auditLine(detail, fsm.MaxAuditDetail),
	}
	if b.Who == "" || b.Action == "" {
		return errors.New("audit: who and action are required")
	}
	if err := b.Validate(); err != nil {
		return err
	}
	_, err := s.apply(ctx, fsm.CmdAuditAppend, b)
	return err
}

// nodeID is the node the records of this server name.
func (s *Server) nodeID() string {
	if s.cfg.NodeID != "" {
		return s.cfg.NodeID
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "unknown"
}

// auditLine makes v one line of at most limit bytes of valid UTF-8
// without control characters, trimmed of surrounding spaces.
func auditLine(v string, limit int) string {
	v = strings.ToValidUTF8(v, "\uFFFD")
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, v)
	v = strings.TrimSpace(v)
	if len(v) <= limit {
		return v
	}
	const ell = "…"
	cut := limit - len(ell)
	for cut > 0 && !utf8.RuneStart(v[cut]) {
		cut--
	}
	return v[:cut] + ell
}

// adminAudit answers GET /audit?limit=N: the newest N records (default
// DefaultAuditList, at most fsm.AuditCap).
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) {
	limit := DefaultAuditList
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeErr(w, http.StatusBadRequest, "invalid --limit "+strconv.Quote(v)+": want a positive number")
			return
		}
		limit = min(n, fsm.AuditCap)
	}
	writeJSON(w, http.StatusOK, s.fsm.AuditLog(limit))
}
