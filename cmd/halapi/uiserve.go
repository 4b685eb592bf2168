package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi"
	"github.com/halapi/halapi/lapi/profiles"
	"github.com/halapi/halapi/pki"
	"github.com/halapi/halapi/ui"
	"github.com/spf13/pflag"
)

// uiFlags are serve's web console flags.
type uiFlags struct {
	enabled bool
	listen  string
}

func bindUIFlags(fl *pflag.FlagSet, f *uiFlags) {
	fl.BoolVar(&f.enabled, "ui", true, "serve the web console under /ui/ (sign in with `halapi ui login` or an admin certificate)")
	fl.StringVar(&f.listen, "ui-listen", "", "serve the web console on this address (host:port) instead of the API listener, with the same TLS: its host must be one of the node certificate's names (the --listen host or an --api-name)")
}

// newConsole builds the node's web console (nil when --ui=false). Its
// writes go through the admin API, which serves the console's own route
// (`halapi ui login`): adminH is resolved at call time.
func newConsole(f serveFlags, machine *fsm.FSM, srv *lapi.Server, verifier *pki.ClientVerifier, scheme string, logger *slog.Logger, adminH func() http.Handler) (*ui.Console, error) {
	if !f.ui.enabled {
		if f.ui.listen != "" {
			return nil, fmt.Errorf("--ui-listen needs --ui")
		}
		return nil, nil
	}
	base := f.apiAdvertise
	if base == "" {
		base = pki.AdvertisedAPIURL(scheme, f.listen, f.pki.apiNames)
	}
	if f.ui.listen != "" {
		if _, _, err := net.SplitHostPort(f.ui.listen); err != nil {
			return nil, fmt.Errorf("--ui-listen %q: %w", f.ui.listen, err)
		}
		base = pki.AdvertisedAPIURL(scheme, f.ui.listen, f.pki.apiNames)
	}
	cfg := ui.Config{FSM: machine, NodeID: f.nodeID, BaseURL: base, PlainHTTP: scheme == "http", Logger: logger,
		Admin: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { adminH().ServeHTTP(w, r) })}
	// Operators sign in with a cluster-CA certificate in an admin OU;
	// the console's writes go to the replicated audit trail.
	cfg.CertIdentity = func(cs *tls.ConnectionState) (string, error) { return verifier.Verify(cs, pki.RoleAdmin) }
	cfg.Audit = srv.RecordAudit
	cfg.AuditLog = func(limit int) []ui.AuditEntry {
		recs := machine.AuditLog(limit)
		out := make([]ui.AuditEntry, len(recs))
		for i, r := range recs {
			out[i] = ui.AuditEntry{Time: r.Time, Node: r.Node, Who: r.Who, Action: r.Action, Target: r.Target, Detail: r.Detail}
		}
		return out
	}
	if profiles.GeoIPLoaded() {
		cfg.Country = profiles.GeoIPCountry
	}
	return ui.New(cfg)
}

// consoleRoutes is the console's admin route, or none.
func consoleRoutes(c *ui.Console) admin.Routes {
	if c == nil {
		return func(*mux.Router) {}
	}
	return c.AdminRoutes
}

// mountConsole serves the console under /ui/ on the API mux, or on its
// own listener (--ui-listen, with the API's TLS). The returned function
// stops that listener.
func mountConsole(apiMux *http.ServeMux, c *ui.Console, f serveFlags, rt *pki.Runtime, verifier *pki.ClientVerifier, logger *slog.Logger) (func(), error) {
	if c == nil {
		return func() {}, nil
	}
	h := c.Handler()
	if f.ui.listen == "" {
		apiMux.Handle("/ui/", h)
		apiMux.Handle("/ui", h)
		return func() {}, nil
	}
	m := http.NewServeMux()
	m.Handle("/ui/", h)
	m.Handle("/ui", h)
	m.Handle("/", http.RedirectHandler("/ui/", http.StatusSeeOther))
	ln, err := net.Listen("tcp", f.ui.listen)
	if err != nil {
		return nil, fmt.Errorf("--ui-listen: %w", err)
	}
	if !f.pki.plainHTTP {
		base := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: rt.GetCertificate}
		if f.tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(f.tlsCert, f.tlsKey)
			if err != nil {
				_ = ln.Close()
				return nil, fmt.Errorf("--tls-cert: %w", err)
			}
			base.GetCertificate = nil
			base.Certificates = []tls.Certificate{cert}
		}
		ln = tls.NewListener(ln, verifier.ServerTLS(base))
	}
	hs := &http.Server{Handler: lapi.BoundOtherBodies(m, 1<<20), ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout: 120 * time.Second, MaxHeaderBytes: lapi.MaxHeaderBytes}
	go func() { _ = hs.Serve(ln) }()
	logger.Info("web console listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}
