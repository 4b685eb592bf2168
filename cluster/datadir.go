package cluster

import (
	"os"
	"path/filepath"
)

// HasState reports whether dataDir holds raft state (DATA/raft/raft.db):
// the node has been part of a cluster before.
func HasState(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, "raft", "raft.db"))
	return err == nil
}
