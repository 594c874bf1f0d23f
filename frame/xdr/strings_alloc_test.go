package xdr

import (
	"encoding/binary"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stringArray encodes n copies of s as an XDR array of strings.
func stringArray(n int, s string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(n))
	for range n {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
		b = append(b, make([]byte, padLen(len(s)))...)
	}
	return b
}

// A []string costs its slice (16 bytes per element, Go's string header)
// plus its bytes, allocated once each: not one allocation per string, whose
// size-class rounding and per-object cost a hostile list of short strings
// multiplied.
func TestStringSliceDecodesCompactly(t *testing.T) {
	const n, elem = 1 << 16, "nine-byte" // 9 bytes: a 16-byte size class each if allocated alone
	in := stringArray(n, elem)
	var v struct{ S []string }
	allocs := testing.AllocsPerRun(5, func() {
		v.S = nil
		require.NoError(t, Unmarshal(in, &v))
	})
	// 4 in a quiet run (slice, backing string, their growth); a GC or the
	// runtime's own bookkeeping adds one now and then. One per string, the
	// bug this guards against, is 65539.
	assert.LessOrEqual(t, allocs, 16.0, "allocations for %d strings", n)

	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	v.S = nil
	require.NoError(t, Unmarshal(in, &v))
	runtime.ReadMemStats(&m1)
	floor := uint64(n*16 + n*len(elem))
	assert.LessOrEqual(t, m1.TotalAlloc-m0.TotalAlloc, floor+floor/16, "bytes allocated; the floor is %d", floor)

	require.Len(t, v.S, n)
	for _, s := range v.S {
		require.Equal(t, elem, s)
	}
}

// The compact path decodes exactly as the generic one: limits, errors with
// the element's path, empty lists as nil, named slice types.
func TestStringSliceDecodeEdges(t *testing.T) {
	type names []string
	var v struct {
		A names
		B []string `xdr:"max=2"`
	}
	in := append(stringArray(3, "abc"), stringArray(2, "")...)
	require.NoError(t, Unmarshal(in, &v))
	assert.Equal(t, names{"abc", "abc", "abc"}, v.A)
	assert.Equal(t, []string{"", ""}, v.B)

	err := Unmarshal(append(stringArray(0, ""), stringArray(3, "x")...), &v)
	require.ErrorIs(t, err, ErrTooLong)
	assert.Nil(t, v.A, "an empty array decodes as nil")

	bad := stringArray(2, "abcd")
	bad = bad[:len(bad)-1] // the second string is cut short
	err = Unmarshal(bad, &struct{ S []string }{})
	require.ErrorIs(t, err, ErrShort)
	assert.Contains(t, err.Error(), "[1]")

	long := strings.Repeat("y", 1000)
	var w struct{ S []string }
	require.NoError(t, Unmarshal(stringArray(2, long), &w))
	assert.Equal(t, []string{long, long}, w.S)
}
