// Package testharness runs halapi processes for the end-to-end tests (the
// e2e module) and the benchmarks (cmd/halapi-bench, cmd/halapi-agent-bench):
// loopback ports that no two servers of one process share, a process with
// its output in a log file that can be stopped, killed and started again
// with the same command line, the wait for GET /health, admin commands run
// against a data dir, and the build of the binary under test.
//
// Nothing here imports package testing: its functions return errors, and
// the callers decide whether one fails a test or a benchmark run.
// internal/testutil holds the helpers of unit tests built on it.
package testharness
