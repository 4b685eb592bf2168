package lapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"

	"github.com/halapi/halapi/fsm"
)

// IdempotencyHeader lets a client (halapi agent) make a write safe to
// retry on another node: the key becomes the raft command's request ID,
// so the FSM applies the first attempt that commits and answers every
// other one with that first result (fsm dedup, last 65,536 IDs).
const IdempotencyHeader = "Idempotency-Key"

// Bounds on a client-chosen key: it is hostile input.
const (
	minIdemKey = 16
	maxIdemKey = 128
)

// idemKey returns the validated Idempotency-Key of r ("" when absent).
func idemKey(r *http.Request) (string, error) {
	vals := r.Header.Values(IdempotencyHeader)
	if len(vals) == 0 {
		return "", nil
	}
	k := vals[0]
	if len(vals) > 1 || len(k) < minIdemKey || len(k) > maxIdemKey {
		return "", fmt.Errorf("invalid %s header: one value of %d to %d characters", IdempotencyHeader, minIdemKey, maxIdemKey)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "", fmt.Errorf("invalid %s header: only letters, digits, '-' and '_' are allowed", IdempotencyHeader)
		}
	}
	return k, nil
}

// commandID turns a client's key into the request ID of the part-th
// command of this request. The key is bound to the authenticated identity
// (machine or bouncer) and the route, so one client cannot make another's
// write look like a duplicate of its own: the ID is a hash of all three.
func commandID(r *http.Request, key, route string, part int) string {
	if key == "" {
		return ""
	}
	who := "m:" + machineID(r)
	if b := bouncerOf(r); b != nil {
		who = "b:" + b.Name
	}
	h := sha256.New()
	for _, s := range []string{who, route, key} {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	return "ik:" + hex.EncodeToString(h.Sum(nil)[:20]) + ":" + strconv.Itoa(part)
}

// applyKeyed is apply with an explicit request ID ("" draws a random one).
func (s *Server) applyKeyed(ctx context.Context, id string, t fsm.CmdType, body any) (*fsm.Result, error) {
	res, err := s.cluster.Apply(ctx, fsm.Command{Type: t, ID: id, Body: body})
	if err != nil {
		return nil, err
	}
	if res.Err() != nil {
		return res, res.Err()
	}
	return res, nil
}
