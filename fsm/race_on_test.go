//go:build race

package fsm

// raceEnabled shrinks the randomized tests under the (slow) race detector.
const raceEnabled = true
