package lapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/fsm"
)

const strfmtTime = "2006-01-02T15:04:05.000Z07:00"

type allowlistItemOut struct {
	Value       string `json:"value"`
	Description string `json:"description,omitempty"`
	CreatedAt   string `json:"created_at"`
	Expiration  string `json:"expiration"`
}

type allowlistOut struct {
	Name           string             `json:"name"`
	AllowlistID    string             `json:"allowlist_id,omitempty"`
	Description    string             `json:"description,omitempty"`
	Items          []allowlistItemOut `json:"items"`
	CreatedAt      string             `json:"created_at"`
	UpdatedAt      string             `json:"updated_at"`
	ConsoleManaged bool               `json:"console_managed,omitempty"`
}

func fmtStrfmt(ns int64) string {
	if ns == 0 {
		return time.Time{}.UTC().Format(strfmtTime)
	}
	return time.Unix(0, ns).UTC().Format(strfmtTime)
}

func formatAllowlist(a *fsm.Allowlist, withContent bool, now time.Time) allowlistOut {
	o := allowlistOut{Name: a.Name, AllowlistID: a.AllowlistID, Description: a.Description,
		Items: []allowlistItemOut{}, CreatedAt: fmtStrfmt(a.CreatedAt), UpdatedAt: fmtStrfmt(a.UpdatedAt),
		ConsoleManaged: a.ConsoleManaged}
	if withContent {
		n := now.UnixNano()
		for _, it := range a.Items {
			if it.Expiration != 0 && it.Expiration < n {
				continue
			}
			o.Items = append(o.Items, allowlistItemOut{Value: it.Value, Description: it.Comment,
				CreatedAt: fmtStrfmt(it.CreatedAt), Expiration: fmtStrfmt(it.Expiration)})
		}
	}
	return o
}

func (s *Server) getAllowlists(w http.ResponseWriter, r *http.Request) {
	with := r.URL.Query().Get("with_content") == "true"
	now := s.now()
	out := []allowlistOut{}
	for _, a := range s.fsm.Allowlists() {
		out = append(out, formatAllowlist(a, with, now))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getAllowlist(w http.ResponseWriter, r *http.Request) {
	name, _ := url.PathUnescape(mux.Vars(r)["allowlist_name"])
	a := s.fsm.Allowlist(name)
	if a == nil {
		writeErr(w, http.StatusInternalServerError, "allowlist '"+name+"' not found")
		return
	}
	writeJSON(w, http.StatusOK, formatAllowlist(a, r.URL.Query().Get("with_content") == "true", s.now()))
}

func (s *Server) checkAllowlist(w http.ResponseWriter, r *http.Request) {
	v, err := url.PathUnescape(mux.Vars(r)["ip_or_range"])
	if err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	reasons, err := s.fsm.AllowlistCheck(v, s.now())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, "invalid ip address '"+v+"'")
		return
	}
	if r.Method == http.MethodHead {
		if len(reasons) > 0 {
			w.WriteHeader(http.StatusOK)
		} else {
			w.WriteHeader(http.StatusNoContent)
		}
		return
	}
	if len(reasons) == 0 {
		writeRaw(w, http.StatusOK, []byte("{}"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"allowlisted": true, "reason": strings.Join(reasons, ", ")})
}

type bulkCheckResult struct {
	Target     string   `json:"target"`
	Allowlists []string `json:"allowlists"`
}

func (s *Server) checkAllowlistBulk(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Targets []string `json:"targets"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Targets) == 0 {
		writeErr(w, http.StatusBadRequest, "targets list cannot be empty")
		return
	}
	now := s.now()
	results := []bulkCheckResult{}
	for _, t := range req.Targets {
		reasons, err := s.fsm.AllowlistCheck(t, now)
		if err != nil {
			writeErr(w, http.StatusInternalServerError, "invalid ip address '"+t+"'")
			return
		}
		if len(reasons) > 0 {
			results = append(results, bulkCheckResult{Target: t, Allowlists: reasons})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": results})
}
