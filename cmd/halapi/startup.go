package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/halapi/halapi/pki"
)

// LockFile is the file in the data dir a serving node holds an exclusive
// flock on: a second `serve` on the same data dir is refused.
const LockFile = "halapi.lock"

// startupChecks refuses, before any state is written, a start that could
// only fail later or do harm. It returns the held data-dir lock (release
// it on exit) and a cleanup that removes a data dir it created when the
// start is abandoned.
func startupChecks(f serveFlags) (release func(), err error) {
	_, statErr := os.Stat(f.dataDir)
	created := errors.Is(statErr, os.ErrNotExist)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		return nil, err
	}
	unlock, err := lockDataDir(f.dataDir)
	if err != nil {
		if created {
			_ = os.RemoveAll(f.dataDir)
		}
		return nil, err
	}
	fail := func(err error) (func(), error) {
		unlock()
		if created {
			_ = os.RemoveAll(f.dataDir)
		}
		return nil, err
	}
	if err := probeListen(f); err != nil {
		return fail(err)
	}
	if err := checkJoin(f); err != nil {
		return fail(err)
	}
	return unlock, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// checkJoin: in secure mode a node with no certificate and no raft state
// either founds the cluster (no --join, no --bootstrap-expect) or joins
// with a token; --join without one would silently found a second cluster
// with its own CA.
func checkJoin(f serveFlags) error {
	secure := f.clusterListen != "" && !f.pki.insecureCluster
	if !secure || f.pki.joinToken != "" || (len(f.join) == 0 && f.bootstrapExpect <= 1) {
		return nil
	}
	if fileExists(filepath.Join(f.dataDir, "pki", pki.NodeCertFile)) || fileExists(filepath.Join(f.dataDir, "raft", "raft.db")) {
		return nil
	}
	return errors.New("--join/--bootstrap-expect on a fresh data dir needs --join-token and --join-api (get a token with `halapi cluster token` on a member); to found a new cluster, start without --join")
}

// probeListen binds every listen address once (and releases it) so a port
// in use is reported before anything is initialised.
func probeListen(f serveFlags) error {
	tcp := []struct{ flag, addr string }{{"--listen", f.listen}, {"--cluster-listen", f.clusterListen},
		{"--gossip-listen", f.gossipListen}}
	if f.metricsExplicit {
		// the default metrics address may be taken (serve then runs
		// without /metrics); an explicit one must be free
		tcp = append(tcp, struct{ flag, addr string }{"--metrics-listen", f.metricsListen})
	}
	for _, a := range tcp {
		if a.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			return fmt.Errorf("%s %s: %w", a.flag, a.addr, unwrapOp(err))
		}
		_ = ln.Close()
	}
	if f.gossipListen != "" {
		pc, err := net.ListenPacket("udp", f.gossipListen)
		if err != nil {
			return fmt.Errorf("--gossip-listen %s (udp): %w", f.gossipListen, unwrapOp(err))
		}
		_ = pc.Close()
	}
	return nil
}

func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}
