package e2e

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The linearizability model of the cluster tests.
//
// The state checked is, for each IP, whether it has an active decision: a
// set of independent boolean registers (the model is partitioned by IP).
// Every added decision has its own IP, so the registers stay independent of
// each other. Operations:
//
//   - Add(ip): a watcher pushes a cscli-style alert with one ban on ip
//     (POST /v1/alerts). Acknowledged: the register becomes true. Failed or
//     timed out (unknown outcome: the write may or may not have been
//     committed, now or later): the operation gets an infinite return time,
//     so the checker may place it anywhere after its call, including after
//     every other operation ("never happened").
//   - Delete(ip) → n: `cscli decisions delete --ip` (DELETE
//     /v1/decisions?ip=) answers how many decisions it deleted: n > 0 iff
//     the register was true just before; it becomes false. Unknown outcome:
//     as for Add, with no constraint on n.
//   - Read(ip) → present. Reads on a follower are served from its local
//     state and may be stale by design, so a plain GET is NOT a
//     linearizable read and is not recorded as one. A recorded read is a
//     write on the node (a dummy alert without decisions, which the node
//     acknowledges only once it has applied it, so after it has applied
//     everything committed before the write was invoked) immediately
//     followed by GET /v1/decisions?ip= on the same node and the same
//     process incarnation. Its interval runs from the invocation of the
//     dummy write to the answer of the GET; the value read is the state at
//     some committed log index reached inside that interval. Reads whose
//     dummy write failed are dropped. Final reads after convergence use the
//     same barrier, one full listing standing for a read of every IP.
//
// Linearizable then means: an acknowledged add is seen by every later read
// on every node, an acknowledged delete is never undone, deletion counts
// agree with what reads saw, and no two reads disagree on the order of
// events.

type regOpKind int

const (
	opAdd regOpKind = iota
	opDelete
	opRead
)

func (k regOpKind) String() string {
	switch k {
	case opAdd:
		return "Add"
	case opDelete:
		return "Delete"
	default:
		return "Read"
	}
}

type regInput struct {
	Kind regOpKind
	IP   string
}

type regOutput struct {
	Unknown bool // Add/Delete: outcome unknown
	N       int  // Delete: nbDeleted
	Present bool // Read
}

// unknownReturn is the return time of operations whose outcome is unknown.
const unknownReturn = math.MaxInt64

var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byIP := map[string][]porcupine.Operation{}
		var order []string
		for _, op := range history {
			ip := op.Input.(regInput).IP
			if _, ok := byIP[ip]; !ok {
				order = append(order, ip)
			}
			byIP[ip] = append(byIP[ip], op)
		}
		out := make([][]porcupine.Operation, 0, len(order))
		for _, ip := range order {
			out = append(out, byIP[ip])
		}
		return out
	},
	Init: func() any { return false },
	Step: func(state, input, output any) (bool, any) {
		present := state.(bool)
		in := input.(regInput)
		out := output.(regOutput)
		switch in.Kind {
		case opAdd:
			return true, true
		case opDelete:
			if out.Unknown {
				return true, false
			}
			return (out.N > 0) == present, false
		default:
			return out.Present == present, present
		}
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		out := output.(regOutput)
		switch {
		case out.Unknown:
			return fmt.Sprintf("%s(%s) → unknown", in.Kind, in.IP)
		case in.Kind == opDelete:
			return fmt.Sprintf("Delete(%s) → %d", in.IP, out.N)
		case in.Kind == opRead:
			return fmt.Sprintf("Read(%s) → %v", in.IP, out.Present)
		default:
			return fmt.Sprintf("Add(%s) → ok", in.IP)
		}
	},
	DescribeState: func(state any) string { return fmt.Sprintf("present=%v", state.(bool)) },
}

// opHistory records operations with their invocation and response times
// (nanoseconds on the monotonic clock since the recorder was created).
type opHistory struct {
	t0  time.Time
	mu  sync.Mutex
	ops []porcupine.Operation
}

func newOpHistory() *opHistory { return &opHistory{t0: time.Now()} }

func (h *opHistory) now() int64 { return int64(time.Since(h.t0)) }

// record adds an operation; an unknown outcome gets an infinite return.
func (h *opHistory) record(client int, in regInput, out regOutput, call, ret int64) {
	if out.Unknown {
		ret = unknownReturn
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	h.mu.Unlock()
}

func (h *opHistory) operations() []porcupine.Operation {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]porcupine.Operation(nil), h.ops...)
}

// historyCounts counts operations per kind and outcome.
type historyCounts struct {
	adds, addsUnknown, deletes, deletesHit, deletesUnknown, reads, readsPresent, readsAbsent int
}

func countHistory(ops []porcupine.Operation) historyCounts {
	var c historyCounts
	for _, op := range ops {
		in := op.Input.(regInput)
		out := op.Output.(regOutput)
		switch in.Kind {
		case opAdd:
			c.adds++
			if out.Unknown {
				c.addsUnknown++
			}
		case opDelete:
			c.deletes++
			if out.Unknown {
				c.deletesUnknown++
			} else if out.N > 0 {
				c.deletesHit++
			}
		default:
			c.reads++
			if out.Present {
				c.readsPresent++
			} else {
				c.readsAbsent++
			}
		}
	}
	return c
}

func (c historyCounts) String() string {
	return fmt.Sprintf("%d adds (%d unknown), %d deletes (%d deleting something, %d unknown), %d linearizable reads (%d present, %d absent)",
		c.adds, c.addsUnknown, c.deletes, c.deletesHit, c.deletesUnknown, c.reads, c.readsPresent, c.readsAbsent)
}

// checkLinearizable runs porcupine on the history and fails the test unless
// it is linearizable; on failure the checker's visualization is written
// to a file outside the test's temporary directories.
func checkLinearizable(t testing.TB, ops []porcupine.Operation) {
	t.Helper()

	res, info := porcupine.CheckOperationsVerbose(registerModel, ops, time.Minute)
	if res == porcupine.Ok {
		return
	}
	msg := fmt.Sprintf("history of %d operations: porcupine says %q, want %q", len(ops), res, porcupine.Ok)
	dir, err := os.MkdirTemp("", "halapi-e2e-porcupine-")
	if err == nil {
		path := filepath.Join(dir, "history.html")
		if err := porcupine.VisualizePath(registerModel, info, path); err == nil {
			msg += "; visualization: " + path
		}
	}
	if res == porcupine.Illegal {
		msg += "\nfirst operations of the smallest illegal partitions:\n" + illegalExcerpt(ops)
	}
	t.Fatal(msg)
}

// illegalExcerpt lists, for the IPs whose sub-history is not linearizable on
// its own, their operations in call order.
func illegalExcerpt(ops []porcupine.Operation) string {
	out := ""
	shown := 0
	for _, part := range registerModel.Partition(ops) {
		if porcupine.CheckOperations(registerModel, part) {
			continue
		}
		sort.Slice(part, func(i, j int) bool { return part[i].Call < part[j].Call })
		for _, op := range part {
			ret := "∞"
			if op.Return != unknownReturn {
				ret = time.Duration(op.Return).String()
			}
			out += fmt.Sprintf("  client %d [%s, %s] %s\n", op.ClientId, time.Duration(op.Call), ret,
				registerModel.DescribeOperation(op.Input, op.Output))
		}
		shown++
		if shown == 3 {
			break
		}
	}
	return out
}

// TestRegisterModel makes sure the model used by the cluster tests can
// fail: it rejects fabricated non-linearizable histories and accepts
// linearizable ones, including unknown outcomes.
func TestRegisterModel(t *testing.T) {
	op := func(client int, kind regOpKind, ip string, out regOutput, call, ret int64) porcupine.Operation {
		if out.Unknown {
			ret = unknownReturn
		}
		return porcupine.Operation{ClientId: client, Input: regInput{kind, ip}, Output: out, Call: call, Return: ret}
	}
	present := regOutput{Present: true}
	absent := regOutput{}
	unknown := regOutput{Unknown: true}

	bad := map[string][]porcupine.Operation{
		// An acknowledged add, then a later read on another node misses it
		// (a stale follower read passed off as linearizable).
		"stale read after add": {
			op(0, opAdd, "10.0.0.1", regOutput{}, 0, 10),
			op(1, opRead, "10.0.0.1", absent, 20, 30),
		},
		// A deleted decision comes back.
		"deleted decision reappears": {
			op(0, opAdd, "10.0.0.1", regOutput{}, 0, 10),
			op(1, opDelete, "10.0.0.1", regOutput{N: 1}, 20, 30),
			op(2, opRead, "10.0.0.1", present, 40, 50),
		},
		// A delete claims to have deleted nothing although the add was
		// acknowledged before it started.
		"delete misses an acknowledged add": {
			op(0, opAdd, "10.0.0.1", regOutput{}, 0, 10),
			op(1, opDelete, "10.0.0.1", regOutput{N: 0}, 20, 30),
		},
		// Two sequential reads see the register flip back without a write.
		"reads go back in time": {
			op(0, opAdd, "10.0.0.2", unknown, 0, 0),
			op(1, opRead, "10.0.0.2", present, 10, 20),
			op(2, opRead, "10.0.0.2", absent, 30, 40),
		},
	}
	for name, h := range bad {
		if porcupine.CheckOperations(registerModel, h) {
			t.Errorf("%s: the model accepts a non-linearizable history", name)
		}
	}

	good := map[string][]porcupine.Operation{
		"concurrent read may or may not see an add": {
			op(0, opAdd, "10.0.0.1", regOutput{}, 0, 100),
			op(1, opRead, "10.0.0.1", absent, 10, 20),
			op(2, opRead, "10.0.0.1", present, 30, 40),
		},
		"unknown add that never happened": {
			op(0, opAdd, "10.0.0.1", unknown, 0, 0),
			op(1, opRead, "10.0.0.1", absent, 10, 20),
		},
		"unknown delete that happened later": {
			op(0, opAdd, "10.0.0.1", regOutput{}, 0, 10),
			op(1, opDelete, "10.0.0.1", unknown, 20, 0),
			op(2, opRead, "10.0.0.1", present, 30, 40),
			op(2, opRead, "10.0.0.1", absent, 50, 60),
			op(2, opRead, "10.0.0.2", absent, 50, 60),
		},
	}
	for name, h := range good {
		if !porcupine.CheckOperations(registerModel, h) {
			t.Errorf("%s: the model rejects a linearizable history", name)
		}
	}
}
