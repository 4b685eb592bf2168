//go:build cgo || sqlite_modernc

package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/crowdsecurity/crowdsec/pkg/apiclient"
	"github.com/crowdsecurity/crowdsec/pkg/csconfig"
	"github.com/crowdsecurity/crowdsec/pkg/models"
	_ "github.com/go-sql-driver/mysql"
)

// `halapi import` from PostgreSQL and MySQL/MariaDB: the test starts a
// real server on loopback in a temp dir when its binaries are installed
// (Debian: apt-get install postgresql / mariadb-server), and skips with
// the reason otherwise. CrowdSec's own database client creates the
// schema and the rows.

const dbStartTimeout = 60 * time.Second

// dbUser runs database servers as nobody when the test runs as root
// (PostgreSQL refuses root).
func dbUser(cmd *exec.Cmd) {
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
}

// dbDir is a temp dir the database server's user owns.
func dbDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "halapi-import-db-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		if err := os.Chown(dir, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func lookBin(t *testing.T, what string, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			t.Skipf("%s not installed (%s not on PATH): install it to run this test (README, Migrating from CrowdSec)", what, n)
		}
		out = append(out, p)
	}
	return out
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeLoopbackAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// startDBServer runs a server process until the test ends.
func startDBServer(t *testing.T, logPath string, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	dbUser(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = cmd.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(stopTimeout):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", filepath.Base(bin), b)
		}
	})
}

func runQuiet(t *testing.T, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dbStartTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	dbUser(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
}

// waitSQL polls until the server accepts a connection and runs setup.
func waitSQL(t *testing.T, driver, dsn string, setup ...string) {
	t.Helper()
	waitFor(t, dbStartTimeout, driver+" server answers", func() (bool, string) {
		db, err := sql.Open(driver, dsn)
		if err != nil {
			return false, err.Error()
		}
		defer db.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			return false, err.Error()
		}
		for _, s := range setup {
			if _, err := db.ExecContext(ctx, s); err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})
}

// importAndCheck imports ref into a fresh server and checks the agent,
// the bouncer, the stream and a second import.
func importAndCheck(t *testing.T, ref *csReference) {
	t.Helper()
	s := StartServer(t)
	rep := runImport(t, s, "--crowdsec-config", ref.ConfigPath)
	checkCounts(t, "import", rep, map[string][3]int{"machines": {3, 0, 0}, "bouncers": {2, 0, 1}, "alerts": {4, 0, 1},
		"decisions": {5, 0, 1}, "allowlist items": {2, 0, 1}})
	w := newWatcher(t, s, "agent1", importAgentPassword)
	if _, err := call("alerts list", func(ctx context.Context) (*models.GetAlertsResponse, error) {
		r, _, err := w.Alerts.List(ctx, apiclient.AlertsListOpts{})
		return r, err
	}); err != nil {
		t.Errorf("agent1 with its CrowdSec password: %v", err)
	}
	if got := firstStream(t, s.URL, importBouncerKey); setDiff(got, ref.Active) != "" {
		t.Errorf("stream vs reference: %s", setDiff(got, ref.Active))
	}
	again := runImport(t, s, "--crowdsec-config", ref.ConfigPath)
	checkCounts(t, "second import", again, map[string][3]int{"machines": {0, 3, 0}, "alerts": {0, 4, 1}, "decisions": {0, 5, 1}})
}

func TestImportCrowdSecPostgres(t *testing.T) {
	bins := lookBin(t, "PostgreSQL", "initdb", "postgres")
	dir := dbDir(t)
	data := filepath.Join(dir, "data")
	runQuiet(t, bins[0], "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	port := freeTCPPort(t)
	startDBServer(t, filepath.Join(dir, "postgres.log"), bins[1], "-D", data, "-k", dir, "-h", "127.0.0.1",
		"-p", strconv.Itoa(port), "-c", "fsync=off")
	// pgx is registered by CrowdSec's database package (stdlib driver)
	waitSQL(t, "pgx", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", port),
		"CREATE DATABASE crowdsec")
	ref := newCSReferenceDB(t, &csconfig.DatabaseCfg{Type: "pgx", Host: "127.0.0.1", Port: port, User: "postgres",
		Password: "unused", DbName: "crowdsec", SSLMode: "disable"},
		fmt.Sprintf("  type: postgresql\n  host: 127.0.0.1\n  port: %d\n  user: postgres\n  password: unused\n  db_name: crowdsec\n  sslmode: disable\n", port))
	importAndCheck(t, ref)
}

func TestImportCrowdSecMySQL(t *testing.T) {
	var installDB, server string
	for _, pair := range [][2]string{{"mariadb-install-db", "mariadbd"}, {"mysql_install_db", "mysqld"}} {
		a, errA := exec.LookPath(pair[0])
		b, errB := exec.LookPath(pair[1])
		if errA == nil && errB == nil {
			installDB, server = a, b
			break
		}
	}
	if server == "" {
		t.Skip("MariaDB/MySQL not installed (mariadb-install-db and mariadbd not on PATH): install it to run this test (README, Migrating from CrowdSec)")
	}
	dir := dbDir(t)
	data := filepath.Join(dir, "data")
	runQuiet(t, installDB, "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal", "--skip-test-db")
	port := freeTCPPort(t)
	startDBServer(t, filepath.Join(dir, "mysqld.log"), server, "--no-defaults", "--datadir="+data,
		"--socket="+filepath.Join(dir, "mysqld.sock"), "--bind-address=127.0.0.1", "--port="+strconv.Itoa(port),
		"--skip-networking=0", "--pid-file="+filepath.Join(dir, "mysqld.pid"))
	waitSQL(t, "mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/", port),
		"CREATE DATABASE IF NOT EXISTS crowdsec",
		"CREATE USER IF NOT EXISTS 'crowdsec'@'127.0.0.1' IDENTIFIED BY 'cs-Passw0rd'",
		"GRANT ALL ON crowdsec.* TO 'crowdsec'@'127.0.0.1'")
	ref := newCSReferenceDB(t, &csconfig.DatabaseCfg{Type: "mysql", Host: "127.0.0.1", Port: port, User: "crowdsec",
		Password: "cs-Passw0rd", DbName: "crowdsec"},
		fmt.Sprintf("  type: mysql\n  host: 127.0.0.1\n  port: %d\n  user: crowdsec\n  password: cs-Passw0rd\n  db_name: crowdsec\n", port))
	importAndCheck(t, ref)
}
