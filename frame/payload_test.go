package frame_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/virtrpc/virtrpc/frame"
)

func TestHoleRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		length int64
		flags  uint32
	}{{0, 0}, {1, 0}, {1 << 20, 0}, {math.MaxInt64, 0xffffffff}, {4096, 1}} {
		var p [frame.HolePayloadSize]byte
		frame.PutHole(p[:], tc.length, tc.flags)
		assert.Equal(t, uint64(tc.length), binary.BigEndian.Uint64(p[:]), "hyper length first")
		assert.Equal(t, tc.flags, binary.BigEndian.Uint32(p[8:]), "then unsigned flags")
		n, flags, err := frame.ParseHole(p[:])
		require.NoError(t, err)
		assert.Equal(t, tc.length, n)
		assert.Equal(t, tc.flags, flags)
	}
}

func TestHoleErrors(t *testing.T) {
	for _, size := range []int{0, 8, 11, 13, 24} {
		_, _, err := frame.ParseHole(make([]byte, size))
		assert.Error(t, err, "payload of %d bytes", size)
	}
	for _, length := range []int64{-1, math.MinInt64} {
		var p [frame.HolePayloadSize]byte
		frame.PutHole(p[:], length, 0)
		n, flags, err := frame.ParseHole(p[:])
		assert.ErrorContains(t, err, "negative", "length %d", length)
		assert.Zero(t, n)
		assert.Zero(t, flags)
	}
	assert.Panics(t, func() { frame.PutHole(make([]byte, frame.HolePayloadSize-1), 1, 0) })
}

func TestCreditRoundTrip(t *testing.T) {
	for _, n := range []uint64{0, 1, 64 << 10, math.MaxUint32 + 1, math.MaxUint64} {
		var p [frame.CreditPayloadSize]byte
		frame.PutCredit(p[:], n)
		assert.Equal(t, n, binary.BigEndian.Uint64(p[:]), "unsigned hyper, big-endian")
		got, err := frame.ParseCredit(p[:])
		require.NoError(t, err)
		assert.Equal(t, n, got)
	}
	for _, size := range []int{0, 4, 7, 9, 12} {
		_, err := frame.ParseCredit(make([]byte, size))
		assert.Error(t, err, "payload of %d bytes", size)
	}
}

func TestHelloRoundTrip(t *testing.T) {
	h := &frame.Hello{
		Version:          frame.ControlVersion,
		Features:         []string{frame.FeatureFlowControl, frame.FeatureLargeFrames, frame.FeatureBidi},
		MaxStreamPayload: 4 << 20,
		InitialWindow:    8 << 20,
		MaxCalls:         64,
	}
	b := frame.EncodeHello(h)
	// The wire layout is part of the protocol between releases: pin it.
	want := mustHex(t, "00000001"+"00000003"+
		"0000000c"+fmt.Sprintf("%x", "flow-control")+
		"0000000c"+fmt.Sprintf("%x", "large-frames")+
		"00000004"+fmt.Sprintf("%x", "bidi")+
		"00400000"+"00800000"+"00000040")
	assert.Equal(t, want, b)

	got, err := frame.DecodeHello(b)
	require.NoError(t, err)
	if diff := cmp.Diff(h, got); diff != "" {
		t.Errorf("Hello (-sent +decoded):\n%s", diff)
	}
	for _, f := range []string{frame.FeatureFlowControl, frame.FeatureLargeFrames, frame.FeatureBidi} {
		assert.True(t, got.Has(f), f)
	}
	assert.False(t, got.Has("flow"), "no prefix match")
	assert.False(t, got.Has(""))
	assert.False(t, (&frame.Hello{Version: 1}).Has(frame.FeatureBidi))

	// Odd lengths are padded.
	h2 := &frame.Hello{Version: 7, Features: []string{"x"}}
	b2 := frame.EncodeHello(h2)
	assert.Equal(t, mustHex(t, "00000007 00000001 00000001 78000000 00000000 00000000 00000000"), b2)
	got2, err := frame.DecodeHello(b2)
	require.NoError(t, err)
	assert.Equal(t, h2, got2)
}

func TestHelloErrors(t *testing.T) {
	good := frame.EncodeHello(&frame.Hello{Version: 1, Features: []string{"bidi"}, MaxCalls: 1})
	// EncodeHello refuses (panics on) more than 64 features, so build the
	// payload by hand: version, count 65, 65 one-byte strings, three words.
	tooMany := mustHex(t, "00000001 00000041")
	for range 65 {
		tooMany = append(tooMany, mustHex(t, "00000001 66000000")...)
	}
	tooMany = append(tooMany, make([]byte, 12)...)
	cases := map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(append([]byte(nil), good...), 0, 0, 0, 0),
		"version 0":      frame.EncodeHello(&frame.Hello{}),
		"65 features":    tooMany,
		"huge count":     mustHex(t, "00000001 ffffffff"),
	}
	assert.Panics(t, func() {
		frame.EncodeHello(&frame.Hello{Version: 1, Features: make([]string, 65)})
	}, "EncodeHello with more than 64 features")
	for name, b := range cases {
		h, err := frame.DecodeHello(b)
		assert.Error(t, err, name)
		assert.Nil(t, h, name)
	}
}

func TestErrorPayloadRoundTrip(t *testing.T) {
	full := &frame.Error{
		Code: frame.CodeOperationFailed, Domain: frame.DomainStream, Message: ptr("all of it"), Level: frame.LevelError,
		Dom:  &frame.NamedUUID{Name: "vm1", UUID: [16]byte{1, 2, 3, 15: 16}, ID: 7},
		Str1: ptr(""), Str2: ptr("ab"), Str3: ptr("abcde"), Int1: math.MinInt32, Int2: math.MaxInt32,
		Net: &frame.NamedUUID{Name: "default", UUID: [16]byte{0: 0xff}},
	}
	for name, e := range map[string]*frame.Error{
		"zero":      {},
		"full":      full,
		"NewError":  frame.NewError(frame.CodeRPC, "bad %s", "thing"),
		"no domain": {Code: 1, Net: &frame.NamedUUID{Name: "n"}},
	} {
		b := frame.EncodeError(e)
		assert.Zero(t, len(b)%4, "%s: XDR is word-aligned", name)
		got, err := frame.DecodeError(b)
		require.NoError(t, err, name)
		if diff := cmp.Diff(e, got); diff != "" {
			t.Errorf("%s (-sent +decoded):\n%s", name, diff)
		}
	}
	// The network has no id, the domain has one.
	b := frame.EncodeError(&frame.Error{Net: &frame.NamedUUID{Name: "n", ID: 99}})
	assert.Len(t, b, 11*4+4+4+16) // 11 words, name "n", uuid
	b = frame.EncodeError(&frame.Error{Dom: &frame.NamedUUID{Name: "d", ID: 99}})
	assert.Len(t, b, 11*4+4+4+16+4) // plus the id
}

func TestErrorPayloadErrors(t *testing.T) {
	good := frame.EncodeError(frame.NewError(frame.CodeInternalError, "x"))
	bad := map[string][]byte{
		"empty":          nil,
		"truncated":      good[:len(good)-4],
		"trailing bytes": append(append([]byte(nil), good...), 0, 0, 0, 0),
		"bool 2":         mustHex(t, "00000001 00000007 00000002"),
		"huge string":    mustHex(t, "00000001 00000007 00000001 7fffffff"),
	}
	for name, b := range bad {
		e, err := frame.DecodeError(b)
		assert.ErrorContains(t, err, "bad error payload", name)
		assert.Nil(t, e, name)
	}
}

func TestErrorType(t *testing.T) {
	e := frame.NewError(frame.CodeOperationDenied, "no %d", 5)
	assert.Equal(t, &frame.Error{
		Code: frame.CodeOperationDenied, Domain: frame.DomainRPC, Message: ptr("no 5"),
		Level: frame.LevelError, Str1: ptr("no 5"), Int1: -1, Int2: -1,
	}, e)
	assert.Equal(t, "remote error: no 5 (code 29, domain 7)", e.Error())
	assert.Equal(t, "no 5", e.Text())

	var target *frame.Error
	require.True(t, errors.As(fmt.Errorf("call failed: %w", e), &target))
	assert.Same(t, e, target)

	empty := &frame.Error{Code: 1}
	assert.Equal(t, "", empty.Text())
	assert.Equal(t, "remote error: <no message> (code 1, domain 0)", empty.Error())
}
