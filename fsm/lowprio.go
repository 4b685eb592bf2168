package fsm

import "github.com/hashicorp/raft"

// bulkMin is the size of an import entry that is applied on the
// low-priority thread (internal/lowprio; the size predecode also starts
// at: a list of about 1,000 values).
const bulkMin = predecodeMin

// hasBulk reports whether logs hold a big list import (a blocklist or CAPI
// pull, cscli decisions import): what the low-priority thread is for. A
// big alert batch is not one: an agent waits for it, and its apply is
// short.
func hasBulk(logs []*raft.Log) bool {
	for _, l := range logs {
		if l.Type == raft.LogCommand && len(l.Data) >= bulkMin && l.Data[0] != 0 {
			switch CmdType(l.Data[1]) {
			case CmdImportList, CmdImportDecisions:
				return true
			}
		}
	}
	return false
}
