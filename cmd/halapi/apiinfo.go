package main

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/pki"
)

// APIInfo is what GET /admin/v1/api-info tells about this node's LAPI
// endpoint, for the credentials files `machines add -f` writes.
type APIInfo struct {
	// URL is the URL clients use: --api-advertise, else the --listen
	// address, or for a wildcard listen the first --api-name (else
	// 127.0.0.1); it is in the node certificate's names.
	URL    string `json:"url"`
	Scheme string `json:"scheme"`
	// BuiltinCA is true when HTTPS uses the cluster CA's node certificate
	// (clients need CAFile / CAPEM as ca_cert_path).
	BuiltinCA bool   `json:"builtin_ca"`
	CAFile    string `json:"ca_file,omitempty"`
	CAPEM     string `json:"ca_pem,omitempty"`
}

// advertisedAPIURL is the client URL of a node listening on listen.
func advertisedAPIURL(scheme, listen string, apiNames []string) string {
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

func apiInfoRoutes(f *serveFlags) func(*mux.Router) {
	return func(r *mux.Router) {
		r.HandleFunc("/api-info", func(w http.ResponseWriter, _ *http.Request) {
			info := APIInfo{Scheme: "https"}
			if f.pki.plainHTTP {
				info.Scheme = "http"
			}
			info.URL = advertisedAPIURL(info.Scheme, f.listen, f.pki.apiNames)
			if f.apiAdvertise != "" {
				info.URL = f.apiAdvertise
			}
			if info.Scheme == "https" && f.tlsCert == "" {
				info.BuiltinCA = true
				p, err := filepath.Abs(filepath.Join(f.dataDir, "pki", pki.CAFile))
				if err == nil {
					if b, err := os.ReadFile(p); err == nil {
						info.CAFile, info.CAPEM = p, string(b)
					}
				}
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(info)
		}).Methods(http.MethodGet)
	}
}
