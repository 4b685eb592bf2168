package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/halapi/halapi/datadir"
)

// startupChecks refuses, before any state is written, a start that could
// only fail later or do harm: a data dir in use, a listen address in use,
// --join without a token on a fresh secure data dir. It returns the held
// data-dir lock (release it on exit); a refused start leaves no data dir
// it created behind (datadir.Open).
func startupChecks(f serveFlags) (release func(), err error) {
	return datadir.Open(f.dataDir, func() error {
		if err := probeListen(f); err != nil {
			return err
		}
		return f.pkiRuntimeConfig().CheckJoin(len(f.join) > 0 || f.bootstrapExpect > 1)
	})
}

// probeListen binds every listen address once (and releases it) so a port
// in use is reported before anything is initialised.
func probeListen(f serveFlags) error {
	tcp := []struct{ flag, addr string }{{"--listen", f.listen}, {"--cluster-listen", f.clusterListen},
		{"--gossip-listen", f.gossipListen}, {"--ui-listen", f.ui.listen}}
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
