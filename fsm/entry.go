package fsm

// The raft log entry format: what a Command is as bytes, and how an entry
// that does not decode is classified (skip or stop, see doc.go).

import (
	"encoding/binary"
	"errors"
	"fmt"
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
