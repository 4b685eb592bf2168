package admin

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/cluster"
)

// BackupRoute streams a backup of the node (GET; `cluster snapshot save`).
const BackupRoute = "/backup"

// Cluster is what the cluster's admin routes need of a node
// (*cluster.Node has it).
type Cluster interface {
	Status(ctx context.Context) cluster.Status
	Snapshot() error
	WriteBackup(ctx context.Context, w io.Writer, version string) (cluster.BackupMeta, error)
}

// ClusterRoutes serves the cluster's admin routes: GET /status, POST
// /snapshot, DELETE /members/{id} (through remove, which in a secure
// cluster also revokes the node's certificates: pki.Runtime.RemoveMember)
// and GET /backup (stamped with version, the build's).
func ClusterRoutes(c Cluster, remove func(ctx context.Context, id string) error, version string) Routes {
	return func(r *mux.Router) {
		r.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
			WriteJSON(w, http.StatusOK, c.Status(r.Context()))
		}).Methods(http.MethodGet)
		r.HandleFunc("/snapshot", func(w http.ResponseWriter, _ *http.Request) {
			if err := c.Snapshot(); err != nil {
				WriteError(w, http.StatusInternalServerError, "snapshot: "+err.Error())
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}).Methods(http.MethodPost)
		r.HandleFunc("/members/{id}", func(w http.ResponseWriter, r *http.Request) {
			if err := remove(r.Context(), mux.Vars(r)["id"]); err != nil {
				WriteApplyError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}).Methods(http.MethodDelete)
		r.HandleFunc(BackupRoute, func(w http.ResponseWriter, r *http.Request) {
			// Buffer the first bytes so that a snapshot that fails at once
			// answers an error instead of a 200 with a truncated body (a
			// later failure truncates the archive, which the CLI detects).
			bw := &startWriter{w: w}
			if _, err := c.WriteBackup(r.Context(), bw, version); err != nil && !bw.started {
				WriteError(w, http.StatusInternalServerError, "backup: "+err.Error())
				return
			}
			bw.flush()
		}).Methods(http.MethodGet)
	}
}

// startWriter holds the first 64 KiB before committing to a 200.
type startWriter struct {
	w       http.ResponseWriter
	head    bytes.Buffer
	started bool
}

func (s *startWriter) Write(p []byte) (int, error) {
	if s.started {
		return s.w.Write(p)
	}
	s.head.Write(p)
	if s.head.Len() >= 64<<10 {
		s.flush()
	}
	return len(p), nil
}

func (s *startWriter) flush() {
	if s.started {
		return
	}
	s.started = true
	s.w.Header().Set("Content-Type", "application/gzip")
	_, _ = s.w.Write(s.head.Bytes())
}
