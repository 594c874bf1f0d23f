package xdr

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unhex decodes space-separated hex, so vectors can be written word by word.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	require.NoError(t, err)
	return b
}

func ptr[T any](v T) *T { return &v }

func TestEncoderVectors(t *testing.T) {
	tests := []struct {
		name  string
		write func(*Encoder)
		want  string
	}{
		{"uint32", func(e *Encoder) { e.Uint32(0x01020304) }, "01020304"},
		{"int32 negative", func(e *Encoder) { e.Int32(-1) }, "ffffffff"},
		{"int32 min", func(e *Encoder) { e.Int32(-1 << 31) }, "80000000"},
		{"uint64", func(e *Encoder) { e.Uint64(0x0102030405060708) }, "01020304 05060708"},
		{"int64 negative", func(e *Encoder) { e.Int64(-2) }, "ffffffff fffffffe"},
		{"bool true", func(e *Encoder) { e.Bool(true) }, "00000001"},
		{"bool false", func(e *Encoder) { e.Bool(false) }, "00000000"},
		{"string abc", func(e *Encoder) { e.String("abc") }, "00000003 61626300"},
		{"string empty", func(e *Encoder) { e.String("") }, "00000000"},
		{"string aligned", func(e *Encoder) { e.String("abcd") }, "00000004 61626364"},
		{"string 5", func(e *Encoder) { e.String("abcde") }, "00000005 61626364 65000000"},
		{"opaque", func(e *Encoder) { e.Opaque([]byte{1, 2, 3, 4, 5}) }, "00000005 01020304 05000000"},
		{"opaque nil", func(e *Encoder) { e.Opaque(nil) }, "00000000"},
		{"fixed opaque", func(e *Encoder) { e.FixedOpaque([]byte{1, 2}) }, "01020000"},
		{"fixed opaque aligned", func(e *Encoder) { e.FixedOpaque([]byte{1, 2, 3, 4}) }, "01020304"},
		{"char array", func(e *Encoder) { e.CharArray([]byte("n,")) }, "00000002 0000006e 0000002c"},
		{"char array sign-extends", func(e *Encoder) { e.CharArray([]byte{0xff, 0x80, 0x7f}) }, "00000003 ffffffff ffffff80 0000007f"},
		{"char array empty", func(e *Encoder) { e.CharArray(nil) }, "00000000"},
		{"optional string nil", func(e *Encoder) { e.OptionalString(nil) }, "00000000"},
		{"optional string", func(e *Encoder) { e.OptionalString(ptr("hi")) }, "00000001 00000002 68690000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEncoder(nil)
			tt.write(e)
			assert.Equal(t, unhex(t, tt.want), e.Bytes())
		})
	}
}

func TestEncoderAppendsAndResets(t *testing.T) {
	e := NewEncoder([]byte("hdr:"))
	e.Uint32(7)
	assert.Equal(t, append([]byte("hdr:"), 0, 0, 0, 7), e.Bytes())

	buf := e.Bytes()
	e.Reset(buf[:0])
	e.Bool(true)
	assert.Equal(t, unhex(t, "00000001"), e.Bytes())
	assert.Same(t, &buf[0], &e.Bytes()[0], "Reset must reuse the buffer it is given")
}

func TestEncoderZeroAllocs(t *testing.T) {
	e := NewEncoder(make([]byte, 0, 256))
	s := "domain-name"
	allocs := testing.AllocsPerRun(100, func() {
		e.Reset(e.Bytes()[:0])
		e.Uint32(1)
		e.Int32(-1)
		e.Uint64(2)
		e.Int64(-2)
		e.Bool(true)
		e.String(s)
		e.Opaque([]byte{1, 2, 3})
		e.FixedOpaque([]byte{1, 2, 3})
		e.CharArray([]byte("ab"))
		e.OptionalString(&s)
	})
	assert.Zero(t, allocs)
}
