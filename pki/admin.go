package pki

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
)

// AdminRoutes serves the PKI's admin routes (admin.Routes): POST
// /pki/join-token, /pki/token, /pki/issue, /pki/revoke, GET /pki/certs
// (503 until the CA is loaded here) and GET /api-info.
func (rt *Runtime) AdminRoutes(r *mux.Router) {
	r.HandleFunc("/pki/join-token", rt.withCA(adminJoinToken)).Methods(http.MethodPost)
	r.HandleFunc("/pki/token", rt.withCA(adminToken)).Methods(http.MethodPost)
	r.HandleFunc("/pki/issue", rt.withCA(adminIssue)).Methods(http.MethodPost)
	r.HandleFunc("/pki/certs", rt.withCA(func(ca *CA, w http.ResponseWriter, _ *http.Request) {
		admin.WriteJSON(w, http.StatusOK, ca.List())
	})).Methods(http.MethodGet)
	r.HandleFunc("/pki/revoke", rt.withCA(rt.adminRevoke)).Methods(http.MethodPost)
	r.HandleFunc(APIInfoRoute, rt.adminAPIInfo).Methods(http.MethodGet)
}

func (rt *Runtime) withCA(fn func(ca *CA, w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ca := rt.CA()
		if ca == nil {
			admin.WriteError(w, http.StatusServiceUnavailable, "the cluster CA is not ready on this node")
			return
		}
		fn(ca, w, r)
	}
}

func adminJoinToken(ca *CA, w http.ResponseWriter, r *http.Request) {
	ttl, err := admin.DurationParam(r, "ttl", time.Hour)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	tok, err := ca.NewJoinToken(r.Context(), ttl)
	if err != nil {
		admin.WriteError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	admin.WriteJSON(w, http.StatusOK, map[string]string{"token": tok, "fingerprint": ca.Fingerprint(),
		"expires": time.Now().Add(ttl).UTC().Format(time.RFC3339)})
}

func adminToken(ca *CA, w http.ResponseWriter, r *http.Request) {
	role, err := ParseRole(r.URL.Query().Get("role"))
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	ttl, err := admin.DurationParam(r, "ttl", 0)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	tok, err := ca.NewToken(r.URL.Query().Get("name"), role, ttl)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	admin.WriteJSON(w, http.StatusOK, map[string]string{"token": tok, "fingerprint": ca.Fingerprint()})
}

func adminIssue(ca *CA, w http.ResponseWriter, r *http.Request) {
	role, err := ParseRole(r.URL.Query().Get("role"))
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	crt, key, serial, err := ca.IssueClient(role, r.URL.Query().Get("name"))
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	admin.WriteJSON(w, http.StatusOK, map[string]any{"cert": string(crt), "key": string(key), "ca": string(ca.RootPEM()), "serial": serial})
}

// adminRevoke revokes by serial or every certificate of a name, and
// answers once every reachable node applied it (≤ 5 s).
func (rt *Runtime) adminRevoke(ca *CA, w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	reason := q.Get("reason")
	var serials []string
	var err error
	if name := q.Get("name"); name != "" {
		serials, err = ca.RevokeName(r.Context(), name, reason)
	} else {
		err = ca.Revoke(r.Context(), q.Get("serial"), reason)
		serials = []string{q.Get("serial")}
	}
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	wctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	rt.waitReplicated(wctx)
	cancel()
	admin.WriteJSON(w, http.StatusOK, map[string]any{"revoked": serials})
}

// APIInfoRoute tells this node's LAPI endpoint (GET).
const APIInfoRoute = "/api-info"

// APIInfo is what GET /admin/v1/api-info tells about this node's LAPI
// endpoint, for the credentials files `machines add -f` writes.
type APIInfo struct {
	// URL is the URL clients use: the --listen address, or for a wildcard
	// listen the first --api-name (else 127.0.0.1); it is in the node
	// certificate's names.
	URL    string `json:"url"`
	Scheme string `json:"scheme"`
	// BuiltinCA is true when HTTPS uses the cluster CA's node certificate
	// (clients need CAFile / CAPEM as ca_cert_path).
	BuiltinCA bool   `json:"builtin_ca"`
	CAFile    string `json:"ca_file,omitempty"`
	CAPEM     string `json:"ca_pem,omitempty"`
}

// AdvertisedAPIURL is the client URL of a node listening on listen.
func AdvertisedAPIURL(scheme, listen string, apiNames []string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return scheme + "://" + listen + "/"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
		for _, n := range apiNames {
			if n = strings.TrimSpace(n); n != "" && !strings.Contains(n, "*") {
				host = n
				break
			}
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}

func (rt *Runtime) adminAPIInfo(w http.ResponseWriter, _ *http.Request) {
	info := APIInfo{Scheme: "https"}
	if rt.cfg.PlainHTTP {
		info.Scheme = "http"
	}
	info.URL = AdvertisedAPIURL(info.Scheme, rt.cfg.Listen, rt.cfg.APINames)
	if rt.cfg.APIAdvertise != "" {
		info.URL = rt.cfg.APIAdvertise
	}
	if info.Scheme == "https" && !rt.cfg.ExternalCert {
		info.BuiltinCA = true
		if p, err := filepath.Abs(filepath.Join(rt.dir, CAFile)); err == nil {
			if b, err := os.ReadFile(p); err == nil {
				info.CAFile, info.CAPEM = p, string(b)
			}
		}
	}
	admin.WriteJSON(w, http.StatusOK, info)
}
