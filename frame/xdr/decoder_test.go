package xdr

import (
	"errors"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecoderRoundTrip(t *testing.T) {
	s := "hello"
	e := NewEncoder(nil)
	e.Uint32(0xdeadbeef)
	e.Int32(-5)
	e.Uint64(1 << 63)
	e.Int64(-1 << 40)
	e.Bool(true)
	e.Bool(false)
	e.String("abc")
	e.Opaque([]byte{9, 8, 7, 6, 5})
	e.FixedOpaque([]byte{1, 2, 3})
	e.CharArray([]byte{'n', ',', 0xff, 0})
	e.OptionalString(&s)
	e.OptionalString(nil)

	d := NewDecoder(e.Bytes())
	u32, err := d.Uint32()
	require.NoError(t, err)
	assert.Equal(t, uint32(0xdeadbeef), u32)
	i32, err := d.Int32()
	require.NoError(t, err)
	assert.Equal(t, int32(-5), i32)
	u64, err := d.Uint64()
	require.NoError(t, err)
	assert.Equal(t, uint64(1<<63), u64)
	i64, err := d.Int64()
	require.NoError(t, err)
	assert.Equal(t, int64(-1<<40), i64)
	b, err := d.Bool()
	require.NoError(t, err)
	assert.True(t, b)
	b, err = d.Bool()
	require.NoError(t, err)
	assert.False(t, b)
	str, err := d.String(3)
	require.NoError(t, err)
	assert.Equal(t, "abc", str)
	op, err := d.Opaque(0)
	require.NoError(t, err)
	assert.Equal(t, []byte{9, 8, 7, 6, 5}, op)
	fo, err := d.FixedOpaque(3)
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2, 3}, fo)
	ca, err := d.CharArray(4)
	require.NoError(t, err)
	assert.Equal(t, []byte{'n', ',', 0xff, 0}, ca)
	os, err := d.OptionalString(0)
	require.NoError(t, err)
	require.NotNil(t, os)
	assert.Equal(t, "hello", *os)
	os, err = d.OptionalString(0)
	require.NoError(t, err)
	assert.Nil(t, os)
	assert.Zero(t, d.Remaining())
	assert.NoError(t, d.Done())
}

func TestDecoderEmptyValuesAreNil(t *testing.T) {
	d := NewDecoder(unhex(t, "00000000 00000000"))
	op, err := d.Opaque(0)
	require.NoError(t, err)
	assert.Nil(t, op)
	ca, err := d.CharArray(0)
	require.NoError(t, err)
	assert.Nil(t, ca)
	fo, err := d.FixedOpaque(0)
	require.NoError(t, err)
	assert.Nil(t, fo)
	assert.NoError(t, d.Done())
}

func TestDecoderLenient(t *testing.T) {
	t.Run("non-zero padding", func(t *testing.T) {
		d := NewDecoder(unhex(t, "00000003 616263ff 0102ffff"))
		s, err := d.String(0)
		require.NoError(t, err)
		assert.Equal(t, "abc", s)
		b, err := d.FixedOpaque(2)
		require.NoError(t, err)
		assert.Equal(t, []byte{1, 2}, b)
		assert.NoError(t, d.Done())
	})
	t.Run("char array keeps low byte", func(t *testing.T) {
		d := NewDecoder(unhex(t, "00000002 1234566e 0000002c"))
		b, err := d.CharArray(0)
		require.NoError(t, err)
		assert.Equal(t, []byte("n,"), b)
	})
}

func TestDecoderCopies(t *testing.T) {
	in := unhex(t, "00000002 61620000 63640000")
	d := NewDecoder(in)
	op, err := d.Opaque(0)
	require.NoError(t, err)
	fo, err := d.FixedOpaque(2)
	require.NoError(t, err)
	for i := range in {
		in[i] = 0xee
	}
	assert.Equal(t, []byte("ab"), op)
	assert.Equal(t, []byte("cd"), fo)
}

func TestDecoderErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		read func(*Decoder) error
		want error
	}{
		{"bad bool", "00000002", func(d *Decoder) error { _, err := d.Bool(); return err }, ErrBadBool},
		{"bad optional flag", "ffffffff", func(d *Decoder) error { _, err := d.OptionalString(0); return err }, ErrBadBool},
		{"string over max", "00000004 61626364", func(d *Decoder) error { _, err := d.String(3); return err }, ErrTooLong},
		{"opaque over max", "00000004 61626364", func(d *Decoder) error { _, err := d.Opaque(3); return err }, ErrTooLong},
		{"char array over max", "00000002 00000061 00000062", func(d *Decoder) error { _, err := d.CharArray(1); return err }, ErrTooLong},
		{"optional string over max", "00000001 00000004 61626364", func(d *Decoder) error { _, err := d.OptionalString(2); return err }, ErrTooLong},
		{"string length past input", "00000005 61626364", func(d *Decoder) error { _, err := d.String(0); return err }, ErrShort},
		{"padding missing", "00000003 616263", func(d *Decoder) error { _, err := d.String(0); return err }, ErrShort},
		{"huge string", "ffffffff 00000000 00000000", func(d *Decoder) error { _, err := d.String(0); return err }, ErrShort},
		{"huge opaque", "ffffffff 00000000 00000000", func(d *Decoder) error { _, err := d.Opaque(0); return err }, ErrShort},
		{"huge char array", "ffffffff 00000000 00000000", func(d *Decoder) error { _, err := d.CharArray(0); return err }, ErrShort},
		{"fixed past input", "0102", func(d *Decoder) error { _, err := d.FixedOpaque(3); return err }, ErrShort},
		{"trailing", "00000001 00", func(d *Decoder) error { _, _ = d.Uint32(); return d.Done() }, ErrTrailing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.read(NewDecoder(unhex(t, tt.in)))
			require.ErrorIs(t, err, tt.want)
			var de *DecodeError
			require.ErrorAs(t, err, &de)
			assert.Empty(t, de.Field)
		})
	}
}

func TestDecoderNoLimitMeansInputBound(t *testing.T) {
	for _, limit := range []int{0, -1} {
		s, err := NewDecoder(unhex(t, "00000005 61626364 65000000")).String(limit)
		require.NoError(t, err)
		assert.Equal(t, "abcde", s)
	}
}

func TestDecoderNegativeFixedLength(t *testing.T) {
	_, err := NewDecoder(unhex(t, "00000000")).FixedOpaque(-1)
	var de *DecodeError
	require.ErrorAs(t, err, &de)
}

// Every proper prefix of a valid encoding must fail with ErrShort, whatever
// read was cut short, and must not panic.
func TestDecoderShortAtEveryPrefix(t *testing.T) {
	s := "xyz"
	items := []struct {
		name  string
		write func(*Encoder)
		read  func(*Decoder) error
	}{
		{"uint32", func(e *Encoder) { e.Uint32(1) }, func(d *Decoder) error { _, err := d.Uint32(); return err }},
		{"int32", func(e *Encoder) { e.Int32(1) }, func(d *Decoder) error { _, err := d.Int32(); return err }},
		{"uint64", func(e *Encoder) { e.Uint64(1) }, func(d *Decoder) error { _, err := d.Uint64(); return err }},
		{"int64", func(e *Encoder) { e.Int64(1) }, func(d *Decoder) error { _, err := d.Int64(); return err }},
		{"bool", func(e *Encoder) { e.Bool(true) }, func(d *Decoder) error { _, err := d.Bool(); return err }},
		{"string", func(e *Encoder) { e.String("hello") }, func(d *Decoder) error { _, err := d.String(0); return err }},
		{"opaque", func(e *Encoder) { e.Opaque([]byte{1, 2, 3}) }, func(d *Decoder) error { _, err := d.Opaque(0); return err }},
		{"fixed", func(e *Encoder) { e.FixedOpaque([]byte{1, 2, 3, 4, 5}) }, func(d *Decoder) error { _, err := d.FixedOpaque(5); return err }},
		{"char", func(e *Encoder) { e.CharArray([]byte("ab")) }, func(d *Decoder) error { _, err := d.CharArray(0); return err }},
		{"optional", func(e *Encoder) { e.OptionalString(&s) }, func(d *Decoder) error { _, err := d.OptionalString(0); return err }},
	}
	for _, it := range items {
		t.Run(it.name, func(t *testing.T) {
			e := NewEncoder(nil)
			it.write(e)
			full := e.Bytes()
			require.NoError(t, it.read(NewDecoder(full)))
			for n := range len(full) {
				err := it.read(NewDecoder(full[:n]))
				assert.ErrorIs(t, err, ErrShort, "prefix of %d bytes", n)
			}
		})
	}
}

// A count of 0xffffffff on a 12-byte input must be rejected from the count
// alone, not by trying to allocate 4 GiB first.
func TestDecoderHugeLengthDoesNotAllocate(t *testing.T) {
	in := unhex(t, "ffffffff 00000000 00000000")
	allocs := testing.AllocsPerRun(20, func() {
		_, err := NewDecoder(in).Opaque(0)
		if !errors.Is(err, ErrShort) {
			t.Fatalf("got %v, want ErrShort", err)
		}
	})
	assert.LessOrEqual(t, allocs, 8.0, "only the error itself may allocate")

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		_, _ = NewDecoder(in).CharArray(0)
		_, _ = NewDecoder(in).String(0)
	}
	runtime.ReadMemStats(&after)
	assert.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<10))
}

func TestDecodeErrorMessage(t *testing.T) {
	err := &DecodeError{Field: "Dom.Name", Err: ErrShort}
	assert.Equal(t, "xdr: Dom.Name: short input", err.Error())
	assert.Equal(t, "xdr: short input", (&DecodeError{Err: ErrShort}).Error())
	assert.Equal(t, "xdr: decode error", (&DecodeError{}).Error())
	assert.ErrorIs(t, err, ErrShort)

	_, got := NewDecoder(unhex(t, "00000008 6162")).String(0)
	assert.EqualError(t, got, "xdr: short input: need 8 bytes, have 2")
}

func TestDecoderFixedOpaqueHugeLength(t *testing.T) {
	_, err := NewDecoder(unhex(t, "00000000")).FixedOpaque(int(^uint(0) >> 1))
	require.ErrorIs(t, err, ErrShort)
}
