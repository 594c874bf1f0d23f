package xdr

import (
	"bytes"
	"errors"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// allocatedBy reports the bytes allocated while f runs.
func allocatedBy(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A count of 0xffffffff followed by 8 bytes must fail from the count alone,
// for every element type, without allocating the slice.
func TestHugeCountsFailBeforeAllocating(t *testing.T) {
	in := unhex(t, "ffffffff 00000000 00000000")
	targets := map[string]func() any{
		"[]int32":       func() any { return new([]int32) },
		"[]int64":       func() any { return new([]int64) },
		"[]string":      func() any { return new([]string) },
		"[][]byte":      func() any { return new([][]byte) },
		"[]*pair":       func() any { return new([]*pair) },
		"[]remoteError": func() any { return new([]remoteError) },
		"[]typedParam":  func() any { return new([]typedParam) },
		"[][16]byte":    func() any { return new([][16]byte) },
		"[]byte":        func() any { return new([]byte) },
		"string":        func() any { return new(string) },
		"char array": func() any {
			return new(struct {
				C []byte `xdr:"char"`
			})
		},
		"nested [][]int": func() any { return new([][]int32) },
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			_ = Unmarshal(in, target()) // build the plan outside the measurement
			var err error
			allocs := testing.AllocsPerRun(10, func() { err = Unmarshal(in, target()) })
			require.ErrorIs(t, err, ErrShort)
			if !raceEnabled {
				assert.LessOrEqual(t, allocs, 10.0, "only the error may allocate")
			}
			assert.Less(t, allocatedBy(func() { _ = Unmarshal(in, target()) }), uint64(16<<10))
		})
	}
}

// The element minimum counts every field: one element of a 16-byte struct
// cannot fit in 12 bytes, so the slice is never made.
func TestCountCheckUsesStructMinimum(t *testing.T) {
	type wide struct{ A, B int64 }
	var v []wide
	err := Unmarshal(unhex(t, "00000001 00000000 00000000 00000000"), &v)
	require.ErrorIs(t, err, ErrShort)
	assert.Contains(t, err.Error(), "count 1 needs at least 16 bytes, have 12")
	assert.Nil(t, v)
}

// An optional of a large type must not be allocated on the strength of a
// single "present" flag.
func TestLargeOptionalNeedsInput(t *testing.T) {
	var v *[1 << 20]byte
	in := unhex(t, "00000001 00000000")
	var err error
	n := allocatedBy(func() { err = Unmarshal(in, &v) })
	require.ErrorIs(t, err, ErrShort)
	assert.Less(t, n, uint64(64<<10))
}

func repeatWord(hexWord string, n int) []byte {
	return bytes.Repeat([]byte{hexWord[0], hexWord[1], hexWord[2], hexWord[3]}, n)
}

func TestDepthLimit(t *testing.T) {
	present := string([]byte{0, 0, 0, 1})

	t.Run("list within limit", func(t *testing.T) {
		var head *node
		for i := range maxDepth {
			head = &node{Val: int32(i), Next: head}
		}
		b, err := Marshal(head)
		require.NoError(t, err)
		var got node
		require.NoError(t, Unmarshal(b, &got))
		assert.Equal(t, *head, got)
	})
	t.Run("list too long to marshal", func(t *testing.T) {
		var head *node
		for range maxDepth + 2 {
			head = &node{Next: head}
		}
		_, err := Marshal(head)
		require.ErrorIs(t, err, ErrTooDeep)
	})
	t.Run("cyclic list", func(t *testing.T) {
		n := &node{Val: 1}
		n.Next = n
		_, err := Marshal(n)
		require.ErrorIs(t, err, ErrTooDeep)
	})
	t.Run("hostile list", func(t *testing.T) {
		// Val=0, Next present, repeated far past the limit.
		in := bytes.Repeat(unhex(t, "00000000 00000001"), 100000)
		var got node
		err := Unmarshal(in, &got)
		require.ErrorIs(t, err, ErrTooDeep)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Contains(t, de.Field, "Next.Next.Next")
	})
	t.Run("what Unmarshal accepts Marshal sends back", func(t *testing.T) {
		// maxDepth levels of one kid each; the innermost has none. The
		// encoder must count levels as the decoder does, or a relay of a
		// valid message fails.
		in := append(repeatWord(present, maxDepth), 0, 0, 0, 0)
		var got tree
		require.NoError(t, Unmarshal(in, &got))
		out, err := Marshal(&got)
		require.NoError(t, err)
		assert.Equal(t, in, out)
	})
	t.Run("hostile tree", func(t *testing.T) {
		in := repeatWord(present, 100000) // each level: one kid
		var got tree
		require.ErrorIs(t, Unmarshal(in, &got), ErrTooDeep)
	})
	t.Run("hostile self pointer", func(t *testing.T) {
		type selfPtr *selfPtr
		var got selfPtr
		require.ErrorIs(t, Unmarshal(repeatWord(present, 100000), &got), ErrTooDeep)
	})
	t.Run("hostile custom recursion", func(t *testing.T) {
		var got recursive
		require.ErrorIs(t, Unmarshal(repeatWord(present, 100000), &got), ErrTooDeep)
	})
	t.Run("depth resets after each value", func(t *testing.T) {
		one := unhex(t, "00000001 00000007")
		d := NewDecoder(bytes.Repeat(one, 3*maxDepth))
		for range 3 * maxDepth {
			require.NoError(t, d.Decode(new([]int32)), "depth must be released on return")
		}
		require.NoError(t, d.Done())
	})
}

// recursive decodes another of itself while it reads "present" flags, the
// way a careless UnmarshalXDR might.
type recursive struct{ Child *recursive }

func (r *recursive) UnmarshalXDR(d *Decoder) error {
	ok, err := d.Bool()
	if err != nil || !ok {
		return err
	}
	r.Child = new(recursive)
	return d.Decode(r.Child)
}

// Decoding must never panic, whatever the bytes and whatever the type.
func TestGarbageNeverPanics(t *testing.T) {
	targets := []func() any{
		func() any { return new(allTypes) },
		func() any { return new(remoteError) },
		func() any { return new(node) },
		func() any { return new(tree) },
		func() any { return new([]typedParam) },
	}
	seed := uint32(1)
	next := func() byte { // xorshift: deterministic, no dependency on math/rand
		seed ^= seed << 13
		seed ^= seed >> 17
		seed ^= seed << 5
		return byte(seed)
	}
	buf := make([]byte, 256)
	for range 2000 {
		for i := range buf {
			// Mostly small values so that lengths and flags are often valid.
			if b := next(); b < 200 {
				buf[i] = 0
			} else {
				buf[i] = b & 7
			}
		}
		for _, target := range targets {
			err := Unmarshal(buf[:int(next())], target())
			if err != nil {
				var de *DecodeError
				require.True(t, errors.As(err, &de), "%v", err)
			}
		}
	}
}
