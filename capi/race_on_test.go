//go:build race

package capi

// raceEnabled shrinks the 100k-decision test under the (slow) race detector.
const raceEnabled = true
