//go:build race

package xdr

// The race detector makes sync.Pool drop items at random, so allocation
// counts that rely on the pools are only checked without it.
const raceEnabled = true
