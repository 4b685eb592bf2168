package main

import "runtime"

// minProcs is the fewest Ps (GOMAXPROCS) a node runs with when the
// operator did not set GOMAXPROCS. On a one-CPU host Go's default is one
// P, and then a query waits behind any step that runs without yielding
// (a BoltDB commit of big entries, a GC mark worker, raft decoding an
// AppendEntries batch) until the runtime preempts it, 10-20 ms later. With
// two Ps the kernel interleaves the two threads at its own time slices
// (about a millisecond): measured on a follower pinned to one CPU during
// a 1M-decision pull, query p99 22 ms with one P, 11 ms with two
// (docs/design/p99.md).
const minProcs = 2

// procsFloor is the GOMAXPROCS a node runs with: current, raised to
// minProcs unless the operator set GOMAXPROCS (env, as the runtime read it).
func procsFloor(env string, current int) int {
	if env != "" || current >= minProcs {
		return current
	}
	return minProcs
}

// raiseProcs applies procsFloor; it reports the Ps before and after.
func raiseProcs(env string) (before, after int) {
	before = runtime.GOMAXPROCS(0)
	after = procsFloor(env, before)
	if after != before {
		runtime.GOMAXPROCS(after)
	}
	return before, after
}
