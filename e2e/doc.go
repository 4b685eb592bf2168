// Package e2e holds the end-to-end tests of halapi: they build the real
// halapi binary, run it as a process on a loopback port with a temporary data
// directory, and drive it with the unmodified CrowdSec client libraries
// (crowdsec pkg/apiclient for watchers, go-cs-bouncer for bouncers).
//
// This is its own Go module so that the client libraries never enter the
// product module's dependency graph. Run it with
//
//	cd e2e && go test -count=1 -timeout 10m ./...
//
// Set HALAPI_BIN to a prebuilt binary to skip the build step.
//
// Processes, ports, the /health wait and admin commands come from the root
// module's internal/testharness (required through `replace => ../`), which
// the benchmarks (cmd/halapi-bench, cmd/halapi-agent-bench) use too.
//
// The cluster tests (cluster_*_test.go) run several nodes on 127.0.0.<B+i>
// (cluster and gossip ports; client API on 127.0.0.1), crash, stop,
// partition (fault proxies in front of the cluster ports) and restart them
// while real clients keep working, and check the recorded history with the
// porcupine linearizability checker (model in linearizability_test.go).
//
// The web console's tests (uibrowser_*_test.go) drive Debian's headless
// Chromium through chromedp: HALAPI_CHROMIUM names the browser (`make e2e`
// sets it; without it they look in /usr/bin and skip when there is none),
// each browser trusts the cluster CA through an NSS database of its own
// (certutil and pk12util from libnss3-tools), and screenshots are kept
// under HALAPI_ARTIFACTS (default e2e/artifacts/). HALAPI_UI_BENCH=1 runs
// the browser render benchmark; HALAPI_UPDATE_SCREENSHOTS=1 rewrites
// docs/img/console-cluster.png.
package e2e
