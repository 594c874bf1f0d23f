package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Before: SIGUSR2 halved a limit to 0 after enough signals, which
// rpc/migrate takes for no limit at all, and SIGUSR1 doubled it past
// int64 into a negative limit (also none); the line printed said 0.0 or
// a negative MB/s.
func TestNextLimitStaysALimit(t *testing.T) {
	limit := int64(50e6)
	for range 100 {
		limit = nextLimit(false, limit, 0)
		require.Positive(t, limit)
	}
	require.EqualValues(t, minLimit, limit, "halved 100 times")
	for range 100 {
		limit = nextLimit(true, limit, 0)
		require.Positive(t, limit)
	}
	require.EqualValues(t, maxLimit, limit, "doubled 100 times")
	require.EqualValues(t, 0, nextLimit(true, 0, 80e6), "no limit stays none on SIGUSR1")
	require.EqualValues(t, 40e6, nextLimit(false, 0, 80e6), "SIGUSR2 without a limit: half the rate")
	require.EqualValues(t, minLimit, nextLimit(false, 0, 0), "SIGUSR2 before any rate")
	require.EqualValues(t, 512<<10, nextLimit(false, 512<<10, 0), "a limit below the floor is kept, not raised")
}
