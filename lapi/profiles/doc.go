// Package profiles implements the LAPI "profiles": the ordered rules that turn
// an agent alert into decisions (ban, captcha, …) and select which notification
// configurations see an alert. The contract is /work/shared/spec/profiles.md,
// modelled on CrowdSec v1.7.6 and kept compatible with its profiles.yaml files
// (expressions are expr-lang programs over one variable, Alert).
//
// The package owns:
//   - loading a profiles file plus its "<path>.local" overlay (strict YAML,
//     every filter and duration_expr compiled up front, clear one-line errors);
//   - the expression environment (Alert plus the helper functions that make
//     sense without external data; the others are rejected at load time);
//   - the evaluation algorithm (Engine.Apply / Engine.Evaluate), including the
//     reference's observable quirks, which are documented where implemented.
//
// It must not: do any I/O other than reading the profiles files in Load, talk
// to raft or the FSM directly (decision counts come through the Store
// interface, implemented elsewhere), store alerts, or send notifications (it
// only reports which profiles matched).
package profiles
