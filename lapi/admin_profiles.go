package lapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/fsm"
	"github.com/halapi/halapi/lapi/profiles"
	"gopkg.in/yaml.v3"
)

// maxProfilesRequest bounds PUT /admin/v1/profiles: the largest set the
// fsm accepts, base64 in JSON.
const maxProfilesRequest = (fsm.MaxProfilesYAML+fsm.MaxNotificationBytes)*4/3 + 1<<20

// ProfilesAdminRoutes serves GET and PUT /admin/v1/profiles (register with
// AddAdminRoutes).
func (s *Server) ProfilesAdminRoutes(r *mux.Router) {
	r.HandleFunc("/profiles", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.profilesView())
	}).Methods("GET")
	r.HandleFunc("/profiles", s.adminProfilesApply).Methods("PUT")
}

// adminProfilesApply replicates a profiles set: parsed here first (the fsm
// cannot), bounded by fsm validation, then written through raft (a
// follower forwards to the leader). It answers once every reachable node
// applied it; this node already evaluates it.
func (s *Server) adminProfilesApply(w http.ResponseWriter, r *http.Request) {
	var req ProfilesApplyRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxProfilesRequest))
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErr(w, http.StatusRequestEntityTooLarge, "profiles request larger than the largest set the cluster stores")
			return
		}
		writeErr(w, http.StatusBadRequest, "invalid request: "+err.Error())
		return
	}
	if len(req.YAML) > fsm.MaxProfilesYAML {
		writeErr(w, http.StatusBadRequest, "profiles file larger than 1 MiB")
		return
	}
	if _, err := profiles.Parse(req.YAML); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid profiles: "+err.Error())
		return
	}
	if err := checkNotificationYAML(req.Notifications); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	body := fsm.ProfilesSet{YAML: req.YAML, Notifications: req.Notifications, SetBy: req.SetBy}
	if err := body.Validate(); err != nil {
		writeErr(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, err := s.apply(r.Context(), fsm.CmdProfilesSet, body); err != nil {
		s.writeApplyErr(w, err)
		return
	}
	s.Profiles()
	s.waitReplicated(r.Context())
	writeJSON(w, http.StatusOK, s.profilesView())
}

// checkNotificationYAML refuses notification configs that are not YAML
// (what they mean is the notification side's business), naming the first
// bad file in name order.
func checkNotificationYAML(files map[string][]byte) error {
	names := make([]string, 0, len(files))
	for k := range files {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		dec := yaml.NewDecoder(bytes.NewReader(files[name]))
		for {
			var doc any
			err := dec.Decode(&doc)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				msg := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "yaml: "), "\n", " ")
				return fmt.Errorf("notification config %s is not YAML: %s", name, msg)
			}
		}
	}
	return nil
}
