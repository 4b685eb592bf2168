package pki

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/smallstep/certificates/api"
	apilog "github.com/smallstep/certificates/api/log"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/db"
)

// StepRoutes are the path patterns (http.ServeMux syntax) Handler answers,
// both at the root, where the step CLI calls them, and under /1.0/. The
// step API's own /health is left out: the LAPI owns that path.
var StepRoutes = []string{
	"/version", "/root/", "/roots", "/roots.pem", "/intermediates", "/intermediates.pem",
	"/federation", "/sign", "/renew", "/rekey", "/revoke", "/crl", "/provisioners", "/provisioners/",
	"/1.0/",
}

// crlRouter wraps the step router so the CRL routes regenerate the CRL
// from the FSM before step's handler serves it.
type crlRouter struct {
	chi.Router
	c *CA
}

func (r crlRouter) MethodFunc(method, pattern string, h http.HandlerFunc) {
	if pattern == "/crl" {
		next := h
		h = func(w http.ResponseWriter, req *http.Request) {
			if _, err := r.c.freshCRL(); err != nil {
				r.c.log.Warn("pki: CRL refresh failed", "err", err)
			}
			next(w, req)
		}
	}
	r.Router.MethodFunc(method, pattern, h)
}

// Handler serves step-ca's HTTP API (health, roots, root/{sha}, sign,
// renew, rekey, revoke, crl, provisioners, intermediates, federation, the
// SSH routes answering that SSH is disabled) at the root and under /1.0,
// so the real `step` CLI can get, renew and revoke certificates with a
// halapi token. Renewal and mTLS revocation read r.TLS: mount it on an
// HTTPS listener that asks for client certificates (ClientCAs = RootPool
// or ClientCAPool, ClientAuth VerifyClientCertIfGiven).
func (c *CA) Handler() http.Handler {
	c.handlerOnce.Do(func() {
		mux := chi.NewRouter()
		api.Route(crlRouter{Router: mux, c: c})
		mux.Route("/1.0", func(r chi.Router) {
			api.Route(crlRouter{Router: r, c: c})
		})
		errLog := apilog.ErrorLogger(func(_ http.ResponseWriter, r *http.Request, err error) {
			// Error texts of the step API carry no token or key material.
			c.log.Debug("pki: step API error", "method", r.Method, "path", r.URL.Path, "err", err)
		})
		c.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := authority.NewContext(r.Context(), c.auth)
			ctx = db.NewContext(ctx, c.db)
			ctx = apilog.WithErrorLogger(ctx, errLog)
			mux.ServeHTTP(w, r.WithContext(ctx))
		})
	})
	return c.handler
}
