package admin

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
)

// The CLI's writes go to the audit trail (fsm/cmd_audit.go) like the web
// console's: every request of the admin API that is not a GET or HEAD and
// succeeded (status below 400) is recorded, once its handler has
// answered, as who "cli:uid=N" (the peer's uid, SO_PEERCRED; "cli" where
// the system does not tell), action "METHOD /route/{var}" (the route's
// template, so the verb stays short), target the route's variables
// ("id=m1") and detail the query parameters a reader needs to know what
// was changed (auditParams: never a body, which may hold a password or a
// key). The record is written before the response completes (the CLI
// returns once it is committed), bounded by auditTimeout; a failure is
// logged and does not change the answer: the change itself is done.

// AuditFunc appends an audit record (lapi.Server.RecordAudit).
type AuditFunc func(ctx context.Context, who, action, target, detail string) error

// auditTimeout bounds the write of one record.
const auditTimeout = 5 * time.Second

// auditParams are the query parameters recorded with a CLI write: the
// filters of deletions, the names, roles and serials of certificates, the
// reasons. Anything else is left out.
var auditParams = map[string]bool{
	"ip": true, "range": true, "scope": true, "value": true, "type": true, "origin": true, "scenario": true,
	"id": true, "all": true, "contains": true, "alert_id": true, "force": true,
	"role": true, "name": true, "serial": true, "reason": true, "ttl": true,
}

// HandlerWithAudit is Handler whose successful writes are recorded with
// audit (nil: none, which is Handler).
func HandlerWithAudit(logger *slog.Logger, audit AuditFunc, owners ...Routes) http.Handler {
	if audit == nil {
		return Handler(logger, owners...)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return Handler(logger, append([]Routes{func(r *mux.Router) { r.Use(auditWrites(audit, logger)) }}, owners...)...)
}

func auditWrites(audit AuditFunc, logger *slog.Logger) mux.MiddlewareFunc {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions {
				next.ServeHTTP(w, r)
				return
			}
			sw := &statusWriter{ResponseWriter: w}
			next.ServeHTTP(sw, r)
			if sw.status() >= 400 {
				return
			}
			who, action, target, detail := auditOf(r)
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), auditTimeout)
			defer cancel()
			if err := audit(ctx, who, action, target, detail); err != nil {
				logger.Warn("admin: audit record not written", "action", action, "err", err)
			}
		})
	}
}

// auditOf describes a request as an audit record.
func auditOf(r *http.Request) (who, action, target, detail string) {
	who = "cli"
	if p, ok := r.Context().Value(peerKey{}).(peer); ok && p.known {
		who = "cli:uid=" + strconv.FormatUint(uint64(p.uid), 10)
	}
	path := r.URL.Path
	if rt := mux.CurrentRoute(r); rt != nil {
		if tmpl, err := rt.GetPathTemplate(); err == nil {
			path = tmpl
		}
	}
	action = r.Method + " " + strings.TrimPrefix(path, Prefix)
	target = sortedPairs(mux.Vars(r), nil)
	q := map[string]string{}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			q[k] = strings.Join(v, ",")
		}
	}
	detail = sortedPairs(q, auditParams)
	return who, action, target, detail
}

// sortedPairs renders k=v pairs in key order, keeping only the keys keep
// allows (nil: all); values are query-escaped so a pair stays one token.
func sortedPairs(m map[string]string, keep map[string]bool) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if keep == nil || keep[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+url.QueryEscape(m[k]))
	}
	return strings.Join(parts, " ")
}

// statusWriter records the status a handler answered; Flush and Unwrap
// keep streaming answers streaming.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
