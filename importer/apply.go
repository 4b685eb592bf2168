package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
	"github.com/halapi/halapi/fsm"
	"github.com/hashicorp/raft"
)

// ApplyFunc writes one command (through raft on a live cluster).
type ApplyFunc func(ctx context.Context, c fsm.Command) (*fsm.Result, error)

// Run plans src against f and, unless dryRun, applies the additions in
// order. It stops at the first refused command (what was written before
// stays: a second run adds the rest).
func Run(ctx context.Context, f *fsm.FSM, src *Source, now time.Time, dryRun bool, apply ApplyFunc) (Report, error) {
	cmds, rep := Plan(f, src, now)
	if dryRun {
		return rep, nil
	}
	for _, c := range cmds {
		res, err := apply(ctx, c)
		if err == nil && res != nil {
			err = res.Err()
		}
		if err != nil {
			return rep, fmt.Errorf("import stopped (%s): %w", describe(c), err)
		}
	}
	rep.Applied = true
	return rep, nil
}

func describe(c fsm.Command) string {
	switch b := c.Body.(type) {
	case *fsm.MachineCreate:
		return "machine " + b.Machine.ID
	case *fsm.BouncerCreate:
		return "bouncer " + b.Bouncer.Name
	case *fsm.AllowlistCreate:
		return "allowlist " + b.Name
	case *fsm.AllowlistAdd:
		return "items of allowlist " + b.Name
	case *fsm.AllowlistReplace:
		return "allowlist " + b.Name
	case *fsm.AlertsCreate:
		return fmt.Sprintf("%d alerts", len(b.Alerts))
	case *fsm.SetConfig:
		return "setting " + b.Key
	}
	return fmt.Sprintf("command %d", c.Type)
}

// Route is the admin API path of an import (POST, body: a Source; query
// dry_run=true plans only).
const Route = "/import"

// AdminRoutes serves Route on the admin socket (admin.Routes).
func AdminRoutes(f *fsm.FSM, apply ApplyFunc, sync func(ctx context.Context) error) admin.Routes {
	return func(r *mux.Router) {
		r.HandleFunc(Route, Handler(f, apply, sync)).Methods(http.MethodPost)
	}
}

// Handler serves Route on a node: it brings the node's state up to the
// leader's (sync) so the plan sees every acknowledged write, plans, and
// applies through raft. Errors are {"message": "..."}.
func Handler(f *fsm.FSM, apply ApplyFunc, sync func(ctx context.Context) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var src Source
		if err := json.NewDecoder(r.Body).Decode(&src); err != nil {
			admin.WriteError(w, http.StatusBadRequest, "import: "+err.Error())
			return
		}
		dry := r.URL.Query().Get("dry_run") == "true"
		if sync != nil {
			sctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			err := sync(sctx)
			cancel()
			if err != nil && !dry {
				admin.WriteError(w, http.StatusServiceUnavailable, "import needs a leader: "+err.Error())
				return
			}
		}
		rep, err := Run(r.Context(), f, &src, time.Now(), dry, apply)
		if err != nil {
			admin.WriteError(w, http.StatusConflict, err.Error())
			return
		}
		admin.WriteJSON(w, http.StatusOK, rep)
	}
}

// memSink collects a snapshot in memory.
type memSink struct{ bytes.Buffer }

func (*memSink) ID() string    { return "import" }
func (*memSink) Cancel() error { return nil }
func (*memSink) Close() error  { return nil }

// OfflineState builds the state of a fresh cluster holding src: every
// command is validated as a leader validates it and applied to an empty
// FSM at raft indexes 1..n. It returns the FSM snapshot and its last
// index, for a backup archive that `cluster restore` style code writes
// into an empty data dir.
func OfflineState(src *Source, now time.Time) (state []byte, index uint64, rep Report, err error) {
	f := fsm.New(nil)
	cmds, rep := Plan(f, src, now)
	for i, c := range cmds {
		if err := c.Validate(); err != nil {
			return nil, 0, rep, fmt.Errorf("%s: %w", describe(c), err)
		}
		b, err := c.Encode()
		if err != nil {
			return nil, 0, rep, err
		}
		index = uint64(i + 1)
		res, _ := f.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b}).(*fsm.Result)
		if res == nil {
			return nil, 0, rep, fmt.Errorf("%s: no result", describe(c))
		}
		if err := res.Err(); err != nil {
			return nil, 0, rep, fmt.Errorf("%s: %w", describe(c), err)
		}
	}
	if index == 0 {
		return nil, 0, rep, errors.New("nothing to import")
	}
	snap, err := f.Snapshot()
	if err != nil {
		return nil, 0, rep, err
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		return nil, 0, rep, err
	}
	rep.Applied = true
	return sink.Bytes(), index, rep, nil
}
