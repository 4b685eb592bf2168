// Package profiles implements the LAPI "profiles": the ordered rules that turn
// an agent alert into decisions (ban, captcha, …) and select which notification
// configurations see an alert. The contract is /work/shared/spec/profiles.md,
// modelled on CrowdSec v1.7.6 and kept compatible with its profiles.yaml files
// (expressions are expr-lang programs over one variable, Alert).
//
// The package owns:
//   - loading a profiles file plus its "<path>.local" overlay (strict YAML,
//     every filter and duration_expr compiled up front, clear one-line errors);
//   - the expression environment: Alert plus every helper the reference
//     registers (helpers.go, env.go, helpers_ext.go), with the same results
//     (checked against the reference by e2e/profiles_exprhelpers_test.go);
//   - the helpers' outside data, configured once at start by Configure
//     (HelperConfig): the CTI client and its bounded cache (cti.go), MaxMind
//     databases (geoip.go), hub data files (datafiles.go), stashes
//     (stash.go);
//   - the evaluation algorithm (Engine.Apply / Engine.Evaluate), including the
//     reference's observable quirks, which are documented where implemented.
//
// It must not: talk to raft or the FSM directly (decision counts come through
// the Store interface, implemented elsewhere), store alerts, or send
// notifications (it only reports which profiles matched). Its only I/O is
// reading the profiles files in Load and what the helpers need: the CTI
// HTTP API (bounded by a timeout, cached), data files and GeoIP databases
// (size-bounded, read once), and DNS for LookupHost (bounded by a timeout).
package profiles
