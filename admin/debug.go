package admin

import (
	"fmt"
	"net/http"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"
)

// The runtime's profiles and execution traces of a live node, on the
// socket only (cmd/halapi/serve.go adds DebugRoutes to the socket's
// handler, not to the web console's): a CPU profile or a trace costs the
// node CPU for as long as it runs, and a goroutine dump shows the node's
// internals, so only who is root on the node may take them.
//
// The handlers are written on runtime/pprof and runtime/trace, not taken
// from net/http/pprof: importing net/http/pprof registers /debug/pprof/ on
// http.DefaultServeMux in its init, and no listener of halapi should ever
// be one `http.Serve(ln, nil)` away from serving it. The output is the
// same (go tool pprof and go tool trace read it).

// DebugPrefix is where the debug routes live, under Prefix.
const DebugPrefix = "/debug/pprof"

// Bounds of ?seconds= of a CPU profile or a trace.
const (
	MinDebugSeconds = 1
	MaxDebugSeconds = 120
)

// DebugProfiles are the named profiles served at DebugPrefix/NAME.
var DebugProfiles = []string{"heap", "allocs", "goroutine", "mutex", "block", "threadcreate"}

// capture is the one CPU profile or trace the node takes at a time (the
// runtime allows one CPU profile and one trace per process; one capture
// of either kind keeps the cost on a loaded node bounded).
var capture struct {
	sync.Mutex
	kind  string // "CPU profile" or "trace"; "" when none runs
	until time.Time
}

// startCapture takes the capture slot for kind until now+d, or says what
// holds it.
func startCapture(kind string, d time.Duration) (release func(), busy string) {
	capture.Lock()
	defer capture.Unlock()
	if capture.kind != "" {
		return nil, fmt.Sprintf("a %s is already being taken on this node (until %s): one CPU profile or trace at a time, try again then",
			capture.kind, capture.until.Format(time.TimeOnly))
	}
	capture.kind, capture.until = kind, time.Now().Add(d)
	return func() {
		capture.Lock()
		capture.kind = ""
		capture.Unlock()
	}, ""
}

// DebugRoutes serves, under /admin/v1/debug/pprof:
//
//	GET /profile?seconds=N   CPU profile (pprof, gzip), default 30 s
//	GET /trace?seconds=N     execution trace (go tool trace), default 1 s
//	GET /NAME?debug=D&gc=1   a named profile (DebugProfiles): debug=0
//	                         pprof (gzip), 1 or 2 text (goroutine debug=2:
//	                         every goroutine's stack, as in a panic);
//	                         gc=1 collects before a heap profile
//
// seconds must be MinDebugSeconds..MaxDebugSeconds (400 otherwise); a CPU
// profile or trace while another runs answers 409. The capture ends early
// if the client goes away.
func DebugRoutes(r *mux.Router) {
	r.HandleFunc(DebugPrefix+"/profile", func(w http.ResponseWriter, r *http.Request) {
		d, ok := debugSeconds(w, r, 30)
		if !ok {
			return
		}
		release, busy := startCapture("CPU profile", d)
		if busy != "" {
			WriteError(w, http.StatusConflict, busy)
			return
		}
		defer release()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="profile"`)
		if err := pprof.StartCPUProfile(w); err != nil {
			// another CPU profile of this process, not taken here
			w.Header().Del("Content-Disposition")
			WriteError(w, http.StatusConflict, "cannot start a CPU profile: "+err.Error())
			return
		}
		sleepCtx(r, d)
		pprof.StopCPUProfile()
	}).Methods(http.MethodGet)

	r.HandleFunc(DebugPrefix+"/trace", func(w http.ResponseWriter, r *http.Request) {
		d, ok := debugSeconds(w, r, 1)
		if !ok {
			return
		}
		release, busy := startCapture("trace", d)
		if busy != "" {
			WriteError(w, http.StatusConflict, busy)
			return
		}
		defer release()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="trace"`)
		if err := trace.Start(w); err != nil {
			w.Header().Del("Content-Disposition")
			WriteError(w, http.StatusConflict, "cannot start a trace: "+err.Error())
			return
		}
		sleepCtx(r, d)
		trace.Stop()
	}).Methods(http.MethodGet)

	for _, name := range DebugProfiles {
		r.HandleFunc(DebugPrefix+"/"+name, func(w http.ResponseWriter, r *http.Request) {
			p := pprof.Lookup(name)
			if p == nil {
				WriteError(w, http.StatusNotFound, "no profile "+name+" in this runtime")
				return
			}
			debug := 0
			if v := r.URL.Query().Get("debug"); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 || n > 2 {
					WriteError(w, http.StatusBadRequest, fmt.Sprintf("invalid debug %q: 0 (pprof), 1 or 2 (text)", v))
					return
				}
				debug = n
			}
			if r.URL.Query().Get("gc") == "1" && (name == "heap" || name == "allocs") {
				runtime.GC()
			}
			if debug == 0 {
				w.Header().Set("Content-Type", "application/octet-stream")
				w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
			} else {
				w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			}
			_ = p.WriteTo(w, debug)
		}).Methods(http.MethodGet)
	}
}

// debugSeconds reads ?seconds= (def when absent), answering 400 when it is
// not a whole number of seconds within the bounds.
func debugSeconds(w http.ResponseWriter, r *http.Request, def int) (time.Duration, bool) {
	n := def
	if v := r.URL.Query().Get("seconds"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < MinDebugSeconds || n > MaxDebugSeconds {
			WriteError(w, http.StatusBadRequest, fmt.Sprintf("invalid seconds %q: a whole number from %d to %d", v, MinDebugSeconds, MaxDebugSeconds))
			return 0, false
		}
	}
	return time.Duration(n) * time.Second, true
}

// sleepCtx waits d, or until the client goes away.
func sleepCtx(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}
