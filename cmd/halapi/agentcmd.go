package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/halapi/halapi/agent"
	"github.com/halapi/halapi/pki"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// agentRunConfig is `halapi agent run`'s configuration file
// (`halapi agent enroll` writes one); flags override it.
type agentRunConfig = agent.FileConfig

const (
	defaultAgentListen  = agent.DefaultListen
	defaultAgentMetrics = agent.DefaultMetrics
)

func agentRunCmd() *cobra.Command {
	var cfgPath string
	var f agentRunConfig
	var procs int
	c := &cobra.Command{
		Use:   "run",
		Short: "Run the local failover proxy: clients on this host point their LAPI URL at it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := agentRunConfig{Listen: defaultAgentListen, MetricsListen: defaultAgentMetrics, LogLevel: "info"}
			if cfgPath != "" {
				b, err := os.ReadFile(cfgPath)
				if err != nil {
					return fmt.Errorf("--config: %w", err)
				}
				dec := yaml.NewDecoder(strings.NewReader(string(b)))
				dec.KnownFields(true)
				if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("--config %s: %s", cfgPath, strings.Join(strings.Fields(err.Error()), " "))
				}
			}
			fl := cmd.Flags()
			set := func(name string, dst *string, v string) {
				if fl.Changed(name) {
					*dst = v
				}
			}
			set("listen", &cfg.Listen, f.Listen)
			set("socket", &cfg.Socket, f.Socket)
			set("socket-group", &cfg.SocketGroup, f.SocketGroup)
			set("ca", &cfg.CACertPath, f.CACertPath)
			set("cert", &cfg.CertPath, f.CertPath)
			set("key", &cfg.KeyPath, f.KeyPath)
			set("api-key-file", &cfg.APIKeyFile, f.APIKeyFile)
			set("metrics-listen", &cfg.MetricsListen, f.MetricsListen)
			set("tls-listen", &cfg.TLSListen, f.TLSListen)
			set("tls-cert", &cfg.TLSCertPath, f.TLSCertPath)
			set("tls-key", &cfg.TLSKeyPath, f.TLSKeyPath)
			set("log-level", &cfg.LogLevel, f.LogLevel)
			if fl.Changed("server") {
				cfg.Servers = f.Servers
			}
			// One P by default: the agent relays one host's clients, and
			// with more Ps every request wakes idle threads (futex) for
			// the goroutines net/http starts; see notes/agentperf.md.
			if procs < 0 {
				return errors.New("--procs must be 0 or more")
			}
			if procs > 0 && (fl.Changed("procs") || os.Getenv("GOMAXPROCS") == "") {
				runtime.GOMAXPROCS(procs)
			}
			return runAgent(cmd.Context(), cfg)
		},
	}
	fl := c.Flags()
	fl.StringVar(&cfgPath, "config", "", "YAML configuration (written by `halapi agent enroll --agent-config`); flags override it")
	fl.StringVar(&f.Listen, "listen", defaultAgentListen, "local listener (plain HTTP; keep it on loopback)")
	fl.StringVar(&f.Socket, "socket", "", "also listen on this unix socket (mode 0660; clients use the path as their LAPI URL: crowdsec, cscli); a stale socket is replaced, a live one refused")
	fl.StringVar(&f.SocketGroup, "socket-group", "", "group (name or ID) given the --socket file, so its members may connect")
	fl.StringSliceVar(&f.Servers, "server", nil, "API URL of a halapi node (repeatable); the others are learned from the member list")
	fl.StringVar(&f.CACertPath, "ca", "", "cluster CA (PEM) to verify HTTPS nodes")
	fl.StringVar(&f.CertPath, "cert", "", "this host's enrolled client certificate (PEM): reads the member list, and is presented for local clients that use it on --tls-listen")
	fl.StringVar(&f.KeyPath, "key", "", "key of --cert")
	fl.StringVar(&f.APIKeyFile, "api-key-file", "", "file holding a bouncer API key to read the member list with (when there is no --cert)")
	fl.StringVar(&f.MetricsListen, "metrics-listen", defaultAgentMetrics, "Prometheus /metrics and /status (empty: none)")
	fl.StringVar(&f.TLSListen, "tls-listen", "", "optional HTTPS local listener for certificate-authenticated clients")
	fl.StringVar(&f.TLSCertPath, "tls-cert", "", "certificate of --tls-listen")
	fl.StringVar(&f.TLSKeyPath, "tls-key", "", "key of --tls-cert")
	fl.StringVar(&f.LogLevel, "log-level", "info", "debug, info, warn or error")
	fl.IntVar(&procs, "procs", 1, "CPUs the agent runs Go code on at once (GOMAXPROCS; 0: Go's default, one per CPU, or $GOMAXPROCS)")
	return c
}

func runAgent(ctx context.Context, c agentRunConfig) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("invalid log level %q", c.LogLevel)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if len(c.Servers) == 0 {
		return errors.New("at least one --server URL is needed")
	}
	if c.Listen == "" && c.Socket == "" {
		return errors.New("--listen must not be empty (unless --socket is set)")
	}
	if c.SocketGroup != "" && c.Socket == "" {
		return errors.New("--socket-group needs --socket")
	}
	// A node sees every request the agent relays as coming from this
	// host: off loopback, the agent would let other hosts speak as it
	// (and, on a node's own host, as a trusted loopback client).
	for _, l := range []struct{ flag, addr string }{{"--listen", c.Listen}, {"--tls-listen", c.TLSListen}, {"--metrics-listen", c.MetricsListen}} {
		if l.addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(l.addr)
		if err != nil {
			return fmt.Errorf("%s %q: %w", l.flag, l.addr, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("%s %q: the agent listens on loopback only (127.0.0.0/8, ::1)", l.flag, l.addr)
		}
	}
	cfg := agent.Config{Servers: c.Servers, Logger: logger}
	var pool *x509.CertPool
	if c.CACertPath != "" {
		pem, err := os.ReadFile(c.CACertPath)
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca %s: no PEM certificate", c.CACertPath)
		}
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	if (c.CertPath == "") != (c.KeyPath == "") {
		return errors.New("--cert and --key go together")
	}
	if c.CertPath != "" {
		cfg.IdentityFiles = &agent.IdentityFiles{CertPath: c.CertPath, KeyPath: c.KeyPath}
	}
	if c.APIKeyFile != "" {
		b, err := os.ReadFile(c.APIKeyFile)
		if err != nil {
			return fmt.Errorf("--api-key-file: %w", err)
		}
		cfg.APIKey = strings.TrimSpace(string(b))
		if cfg.APIKey == "" || len(cfg.APIKey) > 512 {
			return fmt.Errorf("--api-key-file %s: want one API key", c.APIKeyFile)
		}
	}
	if c.TLSListen != "" && (c.TLSCertPath == "" || c.TLSKeyPath == "") {
		return errors.New("--tls-listen needs --tls-cert and --tls-key")
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}

	// Bind every listener first: a port in use is one clear error.
	var ln, sln, tln, mln net.Listener
	closeAll := func() {
		for _, l := range []net.Listener{ln, sln, tln, mln} {
			if l != nil {
				_ = l.Close()
			}
		}
	}
	if c.Listen != "" {
		if ln, err = net.Listen("tcp", c.Listen); err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
	}
	if c.Socket != "" {
		// A unix socket needs no loopback check: only this host reaches it,
		// and its mode and group say who on this host may.
		if sln, err = agent.ListenSocket(c.Socket, c.SocketGroup); err != nil {
			closeAll()
			return fmt.Errorf("--socket: %w", err)
		}
	}
	if c.TLSListen != "" {
		lc, err := tls.LoadX509KeyPair(c.TLSCertPath, c.TLSKeyPath)
		if err != nil {
			closeAll()
			return fmt.Errorf("--tls-cert: %w", err)
		}
		raw, err := net.Listen("tcp", c.TLSListen)
		if err != nil {
			closeAll()
			return fmt.Errorf("--tls-listen: %w", err)
		}
		// A client certificate is only asked for, not verified: the
		// handshake proves the client holds its key, and the agent acts
		// only for the key of its own identity (agent.Handler); the
		// cluster verifies the identity upstream.
		tln = tls.NewListener(raw, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{lc},
			ClientAuth: tls.RequestClientCert})
	}
	if c.MetricsListen != "" {
		if mln, err = net.Listen("tcp", c.MetricsListen); err != nil {
			closeAll()
			return fmt.Errorf("--metrics-listen: %w", err)
		}
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	go a.Run(ctx)
	h := a.Handler()
	newServer := func(h http.Handler) *http.Server {
		return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 2 * time.Minute,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug)}
	}
	var servers []*http.Server
	errc := make(chan error, 4)
	serve := func(l net.Listener, h http.Handler) {
		if l == nil {
			return
		}
		s := newServer(h)
		servers = append(servers, s)
		go func() { errc <- s.Serve(l) }()
	}
	// The socket gets the same handler: the same failover, retries and
	// keys; a client on it presents no certificate (crowdsec refuses TLS
	// with a socket), so nothing is presented upstream for it either.
	serve(ln, h)
	serve(sln, h)
	serve(tln, h)
	serve(mln, a.MetricsHandler())
	listenAddr := ""
	if ln != nil {
		listenAddr = ln.Addr().String()
	}
	logger.Info("halapi agent started", "listen", listenAddr, "socket", c.Socket, "servers", strings.Join(c.Servers, ","),
		"metrics", c.MetricsListen, "tls_listen", c.TLSListen)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("listener failed", "err", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(sctx)
	}
	return nil
}

func agentStatusCmd() *cobra.Command {
	var addr, output string
	c := &cobra.Command{
		Use: "status", Short: "Show which node the local agent uses, its failovers, retries and last requests", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "human" && output != "json" {
				return fmt.Errorf("invalid -o %q: human or json", output)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+agent.StatusPath, nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("no halapi agent answering on %s: %w", addr, err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("agent on %s answered %s", addr, resp.Status)
			}
			var st agent.Status
			if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&st); err != nil {
				return fmt.Errorf("agent status: %w", err)
			}
			if output == "json" {
				return printJSON(st)
			}
			printAgentStatus(os.Stdout, st)
			return nil
		},
	}
	c.Flags().StringVar(&addr, "metrics-listen", defaultAgentMetrics, "the agent's --metrics-listen address")
	c.Flags().StringVarP(&output, "output", "o", "human", "human or json")
	return c
}

func printAgentStatus(w io.Writer, st agent.Status) {
	pref := st.Preferred
	if pref == "" {
		pref = "(none healthy)"
	}
	fmt.Fprintf(w, "Preferred node: %s\nFailovers: %d   Retries: %d\n", pref, st.Failovers, st.Retries)
	if id := st.Identity; id != nil {
		fmt.Fprintf(w, "Identity: %s (serial %s, expires %s, renewed %d times)\n", id.Subject, id.Serial, id.NotAfter.Format(time.RFC3339), id.Renewals)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tID\tHEALTHY\tRTT\tREQUESTS\tERRORS\tRETRIES\tSINCE\tLAST ERROR")
	for _, n := range st.Nodes {
		mark := ""
		if n.Preferred {
			mark = " *"
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%v\t%.1fms\t%d\t%d\t%d\t%s\t%s\n", n.URL, mark, n.ID, n.Healthy, n.RTTMillis, n.Requests,
			n.Errors, n.Retries, n.Since.Format(time.RFC3339), n.LastError)
	}
	_ = tw.Flush()
	if len(st.Recent) == 0 {
		return
	}
	fmt.Fprintln(w, "\nLast requests:")
	tw = tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tMETHOD\tPATH\tNODE\tSTATUS\tATTEMPTS\tMS")
	for _, r := range st.Recent {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%.1f\n", r.Time.Format("15:04:05.000"), r.Method, r.Path, r.Node, r.Status, r.Attempts, r.Millis)
	}
	_ = tw.Flush()
}

// setupLocalAgent writes the agent's files next to an enrolled
// certificate (agent.Setup) and points the client config written by
// pki.WriteClientFiles at the agent's TLS listener, trusting its
// certificate (unless lapiURL says otherwise).
func setupLocalAgent(out string, role pki.Role, name, apiURL, lapiURL string, servers []string, listen, tlsListen, socket, socketGroup string) ([]string, error) {
	dir, err := filepath.Abs(out)
	if err != nil {
		return nil, err
	}
	if len(servers) == 0 {
		servers = []string{apiURL}
	}
	written, clientURL, bundle, err := agent.Setup(agent.SetupParams{Dir: dir, CertPath: filepath.Join(dir, name+".crt"),
		KeyPath: filepath.Join(dir, name+".key"), CAPath: filepath.Join(dir, pki.ClientCAFile), Servers: servers,
		Listen: listen, TLSListen: tlsListen, Socket: socket, SocketGroup: socketGroup})
	if err != nil {
		return written, err
	}
	if lapiURL != "" {
		return written, nil // the operator chose the client's URL
	}
	cfgFile := pki.AgentConfigFile
	urlKey := "url"
	if role == pki.RoleBouncer {
		cfgFile, urlKey = pki.BouncerConfigFile, "api_url"
	}
	path := filepath.Join(dir, cfgFile)
	var node yaml.Node
	b, err := os.ReadFile(path)
	if err != nil {
		return written, err
	}
	if err := yaml.Unmarshal(b, &node); err != nil || len(node.Content) == 0 || node.Content[0].Kind != yaml.MappingNode {
		return written, fmt.Errorf("%s: unexpected content", path)
	}
	m := node.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		switch m.Content[i].Value {
		case urlKey:
			m.Content[i+1].Value = clientURL
		case "ca_cert_path":
			m.Content[i+1].Value = bundle
		}
	}
	nb, err := yaml.Marshal(&node)
	if err != nil {
		return written, err
	}
	return written, os.WriteFile(path, nb, 0o600)
}
