package cluster

import (
	"bytes"
	"context"
	"io"
	"time"
)

// WriteStateArchive writes an FSM snapshot made outside raft (`halapi
// import` into a fresh data dir) as a backup archive at the given raft
// index and term, for RestoreBackup.
func WriteStateArchive(ctx context.Context, w io.Writer, nodeID string, index, term uint64, state []byte, version string) (BackupMeta, error) {
	bm := BackupMeta{Format: BackupFormat, NodeID: nodeID, Index: index, Term: term, Size: int64(len(state)),
		Created: time.Now().UTC(), Version: version, LeaderSynced: true}
	return bm, writeArchive(ctx, w, bm, bytes.NewReader(state))
}
