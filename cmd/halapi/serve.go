package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/cluster"
	"github.com/halapi/halapi/datadir"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/importer"
	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/lapi/models"
	"github.com/halapi/halapi/pki"
	"github.com/spf13/cobra"
)

type serveFlags struct {
	dataDir, listen, profiles, nodeID, clusterListen, metricsListen string
	tlsCert, tlsKey                                                 string
	gossipListen, clusterAdvertise                                  string
	apiAdvertise                                                    string
	join                                                            []string
	bootstrapExpect                                                 int
	deadNodeTimeout                                                 time.Duration
	snapshotThreshold, trailingLogs                                 uint64
	capi                                                            capiFlags
	pki                                                             pkiFlags
	trustedIPs, autoRegRanges                                       []string
	autoRegToken                                                    string
	disableRemoteReg                                                bool
	flushMaxItems                                                   int
	flushMaxAge                                                     string
	logLevel                                                        string
	jwtTTL, jwtMaxAge                                               time.Duration
	raftHeartbeat, raftElection, raftLease, raftCommit              time.Duration
	trustedProxies                                                  []string
	maxConns, maxConnsPerIP, maxUnvalidated, loginFreeFailures      int
	unvalidatedTTL, bodyTimeout                                     time.Duration
	metricsExplicit                                                 bool
	memoryLimit                                                     string
	memoryLimitSet                                                  bool
	files                                                           configFlags
	flushAuto                                                       flushAutoFlags
	helpers                                                         helperFlags
	notify                                                          notifyFlags
	ui                                                              uiFlags
}

func serveCmd() *cobra.Command {
	c, _ := newServeCmd()
	return c
}

// newServeCmd returns serve and the flags it fills (tests resolve them
// without serving).
func newServeCmd() (*cobra.Command, *serveFlags) {
	f := &serveFlags{}
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run a halapi node (a one-node cluster on a fresh data dir)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := resolveServeFlags(cmd.Flags(), f, cmd.ErrOrStderr()); err != nil {
				return err
			}
			return serve(cmd.Context(), *f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "halapi-data", "directory holding the raft log, snapshots and the admin socket")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8080", "LAPI listen address (host:port)")
	fl.StringVar(&f.profiles, "profiles", "", "profiles.yaml to use (default: the built-in CrowdSec default profiles)")
	fl.StringVar(&f.nodeID, "node-id", "node1", "this node's unique id in the cluster")
	fl.StringVar(&f.clusterListen, "cluster-listen", "", "cluster port for raft and write forwarding (host:port); empty: single node, in-process transport")
	fl.StringVar(&f.clusterAdvertise, "cluster-advertise", "", "address peers use to reach --cluster-listen (default: the listen address)")
	fl.StringVar(&f.apiAdvertise, "api-advertise", "", "URL clients on other hosts reach this node's API at, advertised to the cluster (member list, cluster status, halapi agent); default: from --listen when it is not a wildcard")
	fl.StringVar(&f.gossipListen, "gossip-listen", "", "gossip (memberlist) address (host:port), needed for a multi-node cluster")
	fl.StringArrayVar(&f.join, "join", nil, "gossip address of an existing member (repeatable)")
	fl.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "bootstrap a new cluster once this many servers have met")
	fl.DurationVar(&f.deadNodeTimeout, "dead-node-timeout", 10*time.Minute, "remove a member from raft after it has been gone this long (only while a quorum remains)")
	fl.StringVar(&f.metricsListen, "metrics-listen", "127.0.0.1:6060", "serve Prometheus /metrics on this address (never on the LAPI listener); empty: no metrics")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate for HTTPS on --listen, instead of the one the built-in CA issues")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	fl.StringSliceVar(&f.trustedIPs, "trusted-ips", nil, "IPs or CIDRs allowed to delete alerts (loopback always is)")
	fl.StringVar(&f.autoRegToken, "auto-registration-token", "", "token (>= 32 chars) that auto-validates machines registering from --auto-registration-ranges")
	fl.StringSliceVar(&f.autoRegRanges, "auto-registration-ranges", nil, "CIDRs allowed to auto-register with the token")
	fl.BoolVar(&f.disableRemoteReg, "disable-remote-registration", false, "refuse POST /v1/watchers from non-loopback clients")
	fl.IntVar(&f.flushMaxItems, "flush-max-items", 5000, "retention: keep at most this many alerts")
	fl.StringVar(&f.flushMaxAge, "flush-max-age", "7d", "retention: delete alerts older than this")
	fl.Uint64Var(&f.snapshotThreshold, "raft-snapshot-threshold", 8192, "raft entries between snapshots")
	fl.Uint64Var(&f.trailingLogs, "raft-trailing-logs", 10240, "raft entries kept after a snapshot (a follower further behind gets the snapshot)")
	fl.DurationVar(&f.raftHeartbeat, "raft-heartbeat-timeout", cluster.DefaultHeartbeatTimeout, "raft: a follower without contact from the leader this long (randomised up to twice) calls an election")
	fl.DurationVar(&f.raftElection, "raft-election-timeout", cluster.DefaultElectionTimeout, "raft: a candidate without a result this long (randomised up to twice) starts a new election")
	fl.DurationVar(&f.raftLease, "raft-leader-lease-timeout", cluster.DefaultLeaderLeaseTimeout, "raft: a leader without contact with a quorum this long steps down (at most --raft-heartbeat-timeout)")
	fl.DurationVar(&f.raftCommit, "raft-commit-timeout", cluster.DefaultCommitTimeout, "raft: longest a follower waits to learn that an entry is committed when nothing else is sent")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.DurationVar(&f.jwtTTL, "jwt-ttl", time.Hour, "lifetime of a machine token")
	fl.DurationVar(&f.jwtMaxAge, "jwt-max-age", 2*time.Hour, "no machine token outlives its login by more than this, refreshes included")
	fl.StringSliceVar(&f.trustedProxies, "trusted-proxies", nil, "IPs or CIDRs of reverse proxies whose X-Forwarded-For names the client (CrowdSec's use_forwarded_for_headers + trusted_proxies); from any other peer the client is the TCP peer")
	fl.IntVar(&f.maxConns, "max-connections", 0, "API connections open at once (0: three quarters of the file descriptor limit, at most 16384)")
	fl.IntVar(&f.maxConnsPerIP, "max-connections-per-ip", 256, "API connections open at once from one address (IPv6: one /64; raise it for big fleets of bouncers behind one NAT address); trusted proxies are exempt; 0: no cap")
	fl.DurationVar(&f.bodyTimeout, "body-timeout", 10*time.Second, "a request body must start arriving within this and then keep up 16 KiB/s, or the connection is closed (0: no deadline)")
	fl.IntVar(&f.loginFreeFailures, "login-free-failures", 10, "failed logins allowed per source address and per machine id before each further one is throttled (429 + Retry-After, 1 s doubling to 30 s)")
	fl.IntVar(&f.maxUnvalidated, "max-unvalidated-machines", 1000, "registrations are refused while this many machines wait for validation (0: no cap)")
	fl.DurationVar(&f.unvalidatedTTL, "unvalidated-machine-ttl", 24*time.Hour, "the leader deletes machines left unvalidated this long after registering (0: never)")
	fl.StringVar(&f.memoryLimit, "memory-limit", "auto", "Go soft memory limit (GOMEMLIMIT): a size such as 768MiB or 2GiB, none, or auto: 80% of the cgroup's memory limit when there is one, else none (a GOMEMLIMIT environment variable wins over auto)")
	bindCAPIFlags(fl, &f.capi)
	bindPKIFlags(fl, &f.pki)
	bindConfigFlags(fl, &f.files, &f.pki.plainRemote)
	bindFlushAutoFlags(fl, &f.flushAuto)
	bindHelperFlags(fl, &f.helpers)
	bindNotifyFlags(fl, &f.notify)
	bindUIFlags(fl, &f.ui)
	return c, f
}

func parsePrefixes(vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range vals {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if !strings.Contains(v, "/") {
			a, err := netip.ParseAddr(v)
			if err != nil {
				return nil, fmt.Errorf("invalid IP %q", v)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("invalid CIDR %q", v)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func serve(ctx context.Context, f serveFlags) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("invalid --log-level %q", f.logLevel)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(logger)
	if before, after := raiseProcs(os.Getenv("GOMAXPROCS")); after != before {
		logger.Info("one CPU: running with more Ps so that queries interleave with long steps (GOMAXPROCS overrides)", "cpus", before, "gomaxprocs", after)
	}
	if os.Getenv("GOGC") == "" {
		// The whole state lives on the heap: with Go's default (100) the
		// heap may grow to twice the live data before a collection. 50
		// keeps a million decisions well under 1 GiB; reads barely
		// allocate, so the extra GC work falls on writes.
		debug.SetGCPercent(50)
	}
	if f.memoryLimitSet || os.Getenv("GOMEMLIMIT") == "" {
		self, _ := os.ReadFile("/proc/self/cgroup")
		lim, err := memoryLimit(f.memoryLimit, "/sys/fs/cgroup", string(self))
		if err != nil {
			return err
		}
		if lim > 0 {
			debug.SetMemoryLimit(lim)
			logger.Info("memory limit", "bytes", lim)
		} else if f.memoryLimitSet {
			debug.SetMemoryLimit(math.MaxInt64)
		}
	}

	cfg := lapi.DefaultConfig()
	cfg.NodeID = f.nodeID
	var err error
	if cfg.TrustedIPs, err = parsePrefixes(f.trustedIPs); err != nil {
		return fmt.Errorf("--trusted-ips: %w", err)
	}
	if cfg.AutoRegRanges, err = parsePrefixes(f.autoRegRanges); err != nil {
		return fmt.Errorf("--auto-registration-ranges: %w", err)
	}
	if f.autoRegToken != "" {
		if len(f.autoRegToken) < 32 {
			return errors.New("--auto-registration-token must be at least 32 characters")
		}
		if len(cfg.AutoRegRanges) == 0 {
			return errors.New("--auto-registration-token needs --auto-registration-ranges")
		}
	}
	if cfg.TrustedProxies, err = parsePrefixes(f.trustedProxies); err != nil {
		return fmt.Errorf("--trusted-proxies: %w", err)
	}
	if f.maxConns < 0 || f.maxConnsPerIP < 0 || f.maxUnvalidated < 0 || f.loginFreeFailures < 1 || f.unvalidatedTTL < 0 || f.bodyTimeout < 0 {
		return errors.New("--max-connections, --max-connections-per-ip, --max-unvalidated-machines, --unvalidated-machine-ttl and --body-timeout must not be negative, --login-free-failures must be at least 1")
	}
	cfg.MaxUnvalidatedMachines = f.maxUnvalidated
	cfg.LoginFreeFailures = f.loginFreeFailures
	cfg.UnvalidatedMachineTTL = f.unvalidatedTTL
	cfg.AutoRegToken = f.autoRegToken
	cfg.DisableRemoteRegistration = f.disableRemoteReg
	if f.flushMaxItems <= 0 {
		return errors.New("--flush-max-items must be > 0")
	}
	cfg.FlushMaxItems = f.flushMaxItems
	age, err := models.ParseDuration(f.flushMaxAge)
	if err != nil || age <= 0 {
		return fmt.Errorf("invalid --flush-max-age %q", f.flushMaxAge)
	}
	cfg.FlushMaxAge = age
	if err := f.flushAuto.apply(&cfg); err != nil {
		return err
	}
	if f.jwtTTL <= 0 || f.jwtMaxAge < f.jwtTTL {
		return errors.New("--jwt-ttl must be > 0 and --jwt-max-age at least --jwt-ttl")
	}
	cfg.TokenTTL, cfg.TokenMaxAge = f.jwtTTL, f.jwtMaxAge
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if f.pki.plainHTTP && f.tlsCert != "" {
		return errors.New("--plain-http and --tls-cert exclude each other")
	}
	if err := f.pki.check(f.listen, f.clusterListen); err != nil {
		return err
	}

	// The expression helpers' configuration comes first: profiles
	// compile against it.
	if err := f.helpers.configure(logger); err != nil {
		return err
	}
	localProfiles, err := lapi.LoadLocalProfiles(f.profiles, f.notify.notificationDir)
	if err != nil {
		return fmt.Errorf("profiles: %w", err)
	}
	if f.raftHeartbeat < 5*time.Millisecond || f.raftElection < 5*time.Millisecond || f.raftLease < 5*time.Millisecond || f.raftCommit <= 0 {
		return errors.New("raft timeouts must be at least 5ms (--raft-commit-timeout > 0)")
	}
	if f.raftLease > f.raftHeartbeat {
		return errors.New("--raft-leader-lease-timeout cannot be longer than --raft-heartbeat-timeout")
	}
	if err := f.pki.readJoinTokenFile(os.Stdin); err != nil {
		return err
	}
	// Refusals (data dir in use, port in use, --join without a token on a
	// fresh data dir) before any state is written.
	release, err := startupChecks(f)
	if err != nil {
		return err
	}
	defer release()
	if err := datadir.Protect(f.dataDir); err != nil {
		return fmt.Errorf("data dir permissions: %w", err)
	}

	scheme := "https"
	if f.pki.plainHTTP {
		scheme = "http"
	}
	apiURL, err := applyAPIAdvertise(&f, scheme, logger)
	if err != nil {
		return err
	}
	pcfg := f.pkiRuntimeConfig()
	pcfg.Logger = logger
	rt, err := pki.Prepare(ctx, pcfg)
	if err != nil {
		return err
	}
	join, expect := rt.JoinPlan(f.join, f.bootstrapExpect)
	machine := fsm.New(logger)
	ccfg := cluster.Config{NodeID: f.nodeID, DataDir: f.dataDir, RaftAddr: f.clusterListen, RaftAdvertise: f.clusterAdvertise,
		GossipAddr: f.gossipListen, Join: join, BootstrapExpect: expect,
		APIURL: apiURL, DeadNodeTimeout: f.deadNodeTimeout, Logger: logger,
		SnapshotThreshold: f.snapshotThreshold, TrailingLogs: f.trailingLogs,
		HeartbeatTimeout: f.raftHeartbeat, ElectionTimeout: f.raftElection, LeaderLeaseTimeout: f.raftLease, CommitTimeout: f.raftCommit}
	if err := rt.ClusterTLS(&ccfg, machine); err != nil {
		return err
	}
	node, err := cluster.Open(ccfg, machine)
	if err != nil {
		return err
	}
	defer node.Close()

	srv, err := lapi.New(cfg, machine, node, nil, logger)
	if err != nil {
		return err
	}
	srv.SetLocalProfiles(localProfiles)
	node.SetProfilesInfo(profilesInfo(srv))
	srv.Metrics().Registry.MustRegister(node.Collector())
	for _, j := range srv.LeaderJobs() {
		node.AddLeaderJob(j)
	}
	capiSvc, err := startCAPI(f.capi, machine, node, logger)
	if err != nil {
		return err
	}
	defer capiSvc.Close() // runs before node.Close()
	srv.Metrics().Registry.MustRegister(capiSvc.Collector())
	notifySvc, err := startNotify(f.notify, machine, node, srv, logger)
	if err != nil {
		return err
	}
	srv.Metrics().Registry.MustRegister(notifyMetrics(notifySvc)...)
	srv.Metrics().Registry.MustRegister(csInfo())
	registerOpsMetrics(srv.Metrics().Registry, rt.Collector())

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	srv.Run(runCtx)
	reloadProfilesOnHUP(runCtx, srv, f.profiles, f.notify.notificationDir, logger)
	rt.Start(runCtx, machine, node)
	go runIdleTrim(runCtx, raftLogFile(f.dataDir), logger) // memtrim.go
	verifier, err := pki.NewClientVerifier(machine, pki.VerifierConfig{AgentOUs: f.pki.agentOUs,
		BouncerOUs: f.pki.bouncerOUs, AdminOUs: f.pki.adminOUs, CABundles: f.pki.clientCAs, CRLPath: f.pki.crl, Logger: logger,
		OCSP: f.pki.clientOCSP, OCSPCache: f.pki.clientOCSPCache})
	if err != nil {
		return fmt.Errorf("client certificates: %w", err)
	}
	srv.SetCertVerifier(certVerifier{verifier})

	if !srv.WaitJWTKey(ctx, 10*time.Second) {
		logger.Warn("no raft leader yet: serving reads, writes wait for a leader")
	}
	if !f.pki.plainHTTP && f.tlsCert == "" {
		if err := rt.WaitCertificate(ctx, 30*time.Second); err != nil {
			if ctx.Err() != nil {
				return nil // stopped while waiting
			}
			return err
		}
	}

	// Web console (package ui): its writes go through the admin API.
	var adminH http.Handler
	console, err := newConsole(f, machine, srv, verifier, scheme, logger, func() http.Handler { return adminH })
	if err != nil {
		return err
	}
	// Admin routes, each owner's (package admin). The console calls them
	// in-process and records its writes itself, under the operator's
	// name; the socket's writes go to the audit trail as the CLI's.
	adminRoutes := []admin.Routes{
		srv.AdminRoutes,
		admin.ClusterRoutes(node, rt.RemoveMember, currentBuild().Version),
		rt.AdminRoutes,
		capiSvc.AdminRoutes,
		importer.AdminRoutes(machine, node.Apply, node.SyncLeader),
		notifySvc.AdminRoutes,
		consoleRoutes(console),
	}
	var socketH http.Handler
	adminH, socketH = adminHandlers(logger, srv.RecordAudit, adminRoutes)
	adm, err := admin.Listen(f.dataDir, socketH)
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	api := srv.Handler()
	if f.metricsListen != "" {
		// /metrics is for the operator's scraper only (CrowdSec's prometheus
		// listener defaults to 127.0.0.1:6060), never on the API port.
		mln, err := net.Listen("tcp", f.metricsListen)
		switch {
		case err != nil && f.metricsExplicit:
			return fmt.Errorf("metrics listener: %w", err)
		case err != nil:
			// the default port is taken (another node on this host)
			logger.Warn("no /metrics: cannot listen on the default --metrics-listen", "addr", f.metricsListen, "err", err)
		default:
			mh := http.NewServeMux()
			mh.Handle("/metrics", srv.Metrics().Handler())
			ms := &http.Server{Handler: mh, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second,
				WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: lapi.MaxHeaderBytes}
			go func() { _ = ms.Serve(mln) }()
			defer ms.Close()
		}
	}
	rt.Mount(mux)
	stopUI, err := mountConsole(mux, console, f, rt, verifier, logger)
	if err != nil {
		return err
	}
	defer stopUI()
	mux.Handle(lapi.MembersPath, srv.MembersHandler(node))
	mux.Handle("/", api)

	rawLn, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	maxConns := f.maxConns
	if maxConns == 0 {
		maxConns = autoMaxConns()
	}
	ln := lapi.LimitListener(rawLn, lapi.ConnLimits{Total: maxConns, PerIP: f.maxConnsPerIP,
		Exempt: cfg.TrustedProxies, OnRefuse: srv.Metrics().ConnectionRefused})
	// Anonymous clients hold nothing for long: headers within 10 s, bodies
	// at a minimum rate (lapi.BodyDeadline), idle keep-alives for 2 min.
	// The step-CA and join routes take a few kB: 1 MiB bounds them.
	hs := &http.Server{Handler: lapi.BodyDeadline(lapi.BoundOtherBodies(mux, 1<<20), f.bodyTimeout, 16<<10), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 120 * time.Second, MaxHeaderBytes: lapi.MaxHeaderBytes}
	errc := make(chan error, 1)
	go func() {
		if f.pki.plainHTTP {
			errc <- hs.Serve(ln)
			return
		}
		base := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: rt.GetCertificate}
		if f.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
			if err != nil {
				errc <- fmt.Errorf("--tls-cert: %w", err)
				return
			}
			base.GetCertificate = nil
			base.Certificates = []tls.Certificate{cert}
		}
		errc <- hs.Serve(tls.NewListener(ln, verifier.ServerTLS(base)))
	}()
	if f.pki.plainHTTP && !isLoopbackHost(f.listen) {
		logger.Warn("the LAPI is served over plain HTTP on a non-loopback address (--allow-plain-http-remote): machine passwords, tokens and bouncer API keys cross the network in clear; move clients to https", "listen", f.listen)
	}
	logger.Info("halapi node started", "node_id", f.nodeID, "api", scheme+"://"+ln.Addr().String(), "data_dir", f.dataDir,
		"max_connections", maxConns, "max_connections_per_ip", f.maxConnsPerIP)

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("API listener failed", "err", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Leave()
	_ = hs.Shutdown(sctx)
	_ = adm.Shutdown(sctx)
	cancelRun()
	return nil
}

// adminHandlers builds the admin API twice from the same owners' routes:
// for the web console, which calls it in-process and records its writes
// itself, and for the node's socket, whose writes are audited as the
// CLI's. Only the socket also serves the runtime's profiles and traces
// (admin.DebugRoutes): they cost the node CPU and show its internals, for
// root on the node only, never for a console operator.
func adminHandlers(logger *slog.Logger, audit admin.AuditFunc, routes []admin.Routes) (console, socket http.Handler) {
	console = admin.Handler(logger, routes...)
	socket = admin.HandlerWithAudit(logger, audit, append(slices.Clip(routes), admin.DebugRoutes)...)
	return console, socket
}

// autoMaxConns leaves a quarter of the file descriptor limit to raft,
// gossip, the cluster port and the data files.
func autoMaxConns() int {
	n := fdLimit()
	if n == 0 {
		return 768
	}
	return int(max(min(n/4*3, 16384), 64))
}
