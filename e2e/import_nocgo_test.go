//go:build !cgo && !sqlite_modernc

package e2e

import "testing"

// The import tests write their reference database with CrowdSec's own
// pkg/database, whose default SQLite driver (mattn/go-sqlite3) needs cgo:
// without a C compiler they are not built (the rest of e2e still is).
func TestImportCrowdSecNeedsCgo(t *testing.T) {
	t.Skip("import e2e tests need cgo (a C compiler such as gcc) or -tags sqlite_modernc: CrowdSec's database package builds its SQLite driver with cgo")
}
