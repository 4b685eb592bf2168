package fsm

import (
	"fmt"
	"strings"
)

// Code classifies the outcome of a command. Codes travel instead of error
// strings: across the cluster RPC, in snapshots (the dedup table of
// request IDs) and up to the HTTP layer, which picks a status from the
// code alone. Never renumber: codes are stored in snapshots and sent
// between nodes of different versions.
type Code uint8

const (
	// CodeOK: the command was applied.
	CodeOK Code = 0
	// CodeNotFound: the command names a record that does not exist.
	CodeNotFound Code = 1
	// CodeConflict: the record to create already exists.
	CodeConflict Code = 2
	// CodeInvalid: the command (or a value in it) is malformed; nothing
	// was changed. Entries that fail Validate on the leader, and
	// malformed entries of a known type met in Apply, get this code.
	CodeInvalid Code = 3
	// CodeForbidden: the record may not be changed this way (a
	// console-managed allowlist edited by hand).
	CodeForbidden Code = 4
	// CodeInternal: anything else (a command type this node cannot
	// handle, an entry the leader refused to decode).
	CodeInternal Code = 5
)

var codeNames = [...]string{"ok", "not_found", "conflict", "invalid", "forbidden", "internal"}

func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// Result is what Apply returns for every command: the IDs it created,
// how many records it affected and, when it failed, a code and a
// human-readable message (the message is what clients see; only the code
// is ever compared).
type Result struct {
	IDs     []int64 `json:"ids,omitempty"`
	N       int     `json:"n,omitempty"`
	Code    Code    `json:"code,omitempty"`
	Message string  `json:"message,omitempty"`
}

// Err returns the command-level error (an *Error), or nil when Code is OK.
func (r *Result) Err() error {
	if r == nil || r.Code == CodeOK {
		return nil
	}
	return &Error{Code: r.Code, Message: r.Message}
}

// Error is a command-level failure. errors.Is matches any *Error with the
// same code, so errors.Is(err, ErrNotFound) holds for every "not found".
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Message
}

// Is matches errors of the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrNotFound  = &Error{Code: CodeNotFound, Message: "object not found"}
	ErrConflict  = &Error{Code: CodeConflict, Message: "already exists"}
	ErrInvalid   = &Error{Code: CodeInvalid, Message: "invalid command"}
	ErrForbidden = &Error{Code: CodeForbidden, Message: "forbidden"}
)

// CodeOf returns the code carried by err (CodeInternal for a plain error,
// CodeOK for nil).
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	for e := err; e != nil; {
		if fe, ok := e.(*Error); ok {
			return fe.Code
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	return CodeInternal
}

func fail(code Code, format string, args ...any) *Result {
	return &Result{Code: code, Message: fmt.Sprintf(format, args...)}
}

// notFound is the result of a command naming a missing record with the
// generic message ("object not found").
func notFound() *Result { return &Result{Code: CodeNotFound, Message: ErrNotFound.Message} }

// LegacyCode classifies an error message written by a version that sent
// and stored messages without codes (old snapshots, the RPC answer of a
// node not yet upgraded during a rolling upgrade). It is the only place
// where a message is inspected, and only for data from those versions; the
// patterns are the messages those versions' Apply produced.
func LegacyCode(msg string) Code {
	switch {
	case msg == "":
		return CodeOK
	case msg == ErrNotFound.Message, strings.HasSuffix(msg, "does not exist"), strings.HasSuffix(msg, "not found"):
		return CodeNotFound
	case strings.HasSuffix(msg, "already exist"), strings.HasSuffix(msg, "already exists"):
		return CodeConflict
	case strings.HasSuffix(msg, "is managed by the console"):
		return CodeForbidden
	case strings.HasPrefix(msg, "invalid "):
		return CodeInvalid
	}
	return CodeInternal
}
