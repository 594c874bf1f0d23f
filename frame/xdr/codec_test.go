package xdr

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// roundTrip checks that v marshals to wantHex and decodes back to v. It
// passes &v, as Marshal follows one pointer: a *T value is an optional.
func roundTrip[T any](t *testing.T, v T, wantHex string) {
	t.Helper()
	b, err := Marshal(&v)
	require.NoError(t, err)
	assert.Equal(t, unhex(t, wantHex), b)
	var got T
	require.NoError(t, Unmarshal(b, &got))
	assert.Empty(t, cmp.Diff(v, got, cmpopts.EquateEmpty()))
}

func TestRoundTripVectors(t *testing.T) {
	t.Run("bool", func(t *testing.T) { roundTrip(t, true, "00000001") })
	t.Run("int32", func(t *testing.T) { roundTrip(t, int32(-2), "fffffffe") })
	t.Run("uint32", func(t *testing.T) { roundTrip(t, uint32(0xcafe), "0000cafe") })
	t.Run("int64", func(t *testing.T) { roundTrip(t, int64(-1), "ffffffff ffffffff") })
	t.Run("uint64", func(t *testing.T) { roundTrip(t, uint64(1<<32), "00000001 00000000") })
	t.Run("named int32", func(t *testing.T) { roundTrip(t, state(5), "00000005") })
	t.Run("string", func(t *testing.T) { roundTrip(t, "abc", "00000003 61626300") })
	t.Run("opaque", func(t *testing.T) { roundTrip(t, []byte{1, 2, 3, 4, 5}, "00000005 01020304 05000000") })
	t.Run("named opaque", func(t *testing.T) { roundTrip(t, blob{7}, "00000001 07000000") })
	t.Run("named byte elements", func(t *testing.T) { roundTrip(t, []octet{1, 2}, "00000002 01020000") })
	t.Run("named byte array", func(t *testing.T) { roundTrip(t, [2]octet{1, 2}, "01020000") })
	t.Run("empty opaque", func(t *testing.T) { roundTrip(t, []byte{}, "00000000") })
	t.Run("fixed opaque", func(t *testing.T) { roundTrip(t, [3]byte{1, 2, 3}, "01020300") })
	t.Run("uuid", func(t *testing.T) {
		roundTrip(t, uuid{0: 0xaa, 15: 0xbb}, "aa000000 00000000 00000000 000000bb")
	})
	t.Run("array", func(t *testing.T) { roundTrip(t, []int32{1, -1}, "00000002 00000001 ffffffff") })
	t.Run("string array", func(t *testing.T) {
		roundTrip(t, []string{"a", "bcdef"}, "00000002 00000001 61000000 00000005 62636465 66000000")
	})
	t.Run("fixed array", func(t *testing.T) { roundTrip(t, [2]uint32{1, 2}, "00000001 00000002") })
	t.Run("optional set", func(t *testing.T) { roundTrip(t, ptr(int32(9)), "00000001 00000009") })
	t.Run("optional nil", func(t *testing.T) { roundTrip(t, (*int32)(nil), "00000000") })
	t.Run("optional optional", func(t *testing.T) { roundTrip(t, ptr(ptr(int32(9))), "00000001 00000001 00000009") })
	t.Run("struct", func(t *testing.T) { roundTrip(t, pair{A: 1, B: "xy"}, "00000001 00000002 78790000") })
	t.Run("char array", func(t *testing.T) {
		type msg struct {
			Text []byte `xdr:"char"`
		}
		roundTrip(t, msg{Text: []byte("n,")}, "00000002 0000006e 0000002c")
	})
	t.Run("custom union", func(t *testing.T) {
		roundTrip(t, typedParam{Field: "vcpus", Value: typedParamValue{Type: paramUInt, UI: 4}},
			"00000005 76637075 73000000 00000002 00000004")
	})
}

func sampleAllTypes() allTypes {
	n := int32(-7)
	return allTypes{
		Bool: true, I32: -1, U32: 0xffffffff, I64: -1 << 62, U64: 1<<64 - 1,
		State: 3, Str: "hello", Bytes: []byte{0, 1, 2}, Blob: blob("blob"),
		UUID:  uuid{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		Fixed: [3]int32{1, 2, 3}, Chars: []byte{'n', ',', 0xff},
		Ints: []int32{5, 6}, Strs: []string{"", "a", "abcd"},
		Pairs:  []pair{{1, "x"}, {2, "yy"}},
		Nested: pair{A: 9, B: "nested"}, Opt: &pair{A: 4, B: "opt"},
		OptStr: ptr("s"), PtrPtr: ptr(&n),
		Params: []typedParam{
			{Field: "i", Value: typedParamValue{Type: paramInt, I: -3}},
			{Field: "l", Value: typedParamValue{Type: paramLLong, L: 1 << 40}},
			{Field: "b", Value: typedParamValue{Type: paramBool, B: true}},
			{Field: "s", Value: typedParamValue{Type: paramString, S: "str"}},
		},
		Matrix:  [2][2]uint32{{1, 2}, {3, 4}},
		Nested2: [][]string{{"a"}, {}, {"b", "c"}},
	}
}

func TestRoundTripAllTypes(t *testing.T) {
	in := sampleAllTypes()
	in.Skipped, in.hidden = 99, 98
	b, err := Marshal(&in)
	require.NoError(t, err)
	b2, err := Marshal(in) // by value: arrays are not addressable, same bytes
	require.NoError(t, err)
	assert.Equal(t, b, b2)

	var got allTypes
	require.NoError(t, Unmarshal(b, &got))
	want := in
	want.Skipped, want.hidden = 0, 0
	assert.Empty(t, cmp.Diff(want, got, cmpopts.EquateEmpty(), cmp.AllowUnexported(allTypes{})))
}

func TestLibvirtErrorVector(t *testing.T) {
	in := remoteError{
		Code: 42, Domain: 10, Message: ptr("Domain not found"), Level: 2,
		Dom:  &remoteNonnullDomain{Name: "vm1", UUID: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, ID: 3},
		Str1: ptr("vm1"), Int1: -1,
	}
	want := unhex(t, ""+
		"0000002a 0000000a "+ // code, domain
		"00000001 00000010 446f6d61 696e206e 6f742066 6f756e64 "+ // message
		"00000002 "+ // level
		"00000001 00000003 766d3100 01020304 05060708 090a0b0c 0d0e0f10 00000003 "+ // dom
		"00000001 00000003 766d3100 00000000 00000000 "+ // str1, str2, str3
		"ffffffff 00000000 "+ // int1, int2
		"00000000") // net
	b, err := Marshal(&in)
	require.NoError(t, err)
	assert.Equal(t, want, b)

	var got remoteError
	require.NoError(t, Unmarshal(want, &got))
	assert.Empty(t, cmp.Diff(in, got))

	// The domain name claims 100 bytes but 28 follow: the error names the field.
	bad := append(want[:40:40], unhex(t, "00000064")...)
	bad = append(bad, make([]byte, 28)...)
	err = Unmarshal(bad, &got)
	var de *DecodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "Dom.Name", de.Field)
	assert.ErrorIs(t, err, ErrShort)
	assert.Equal(t, "xdr: Dom.Name: short input: need 100 bytes, have 28", err.Error())

	// Too little input for even the smallest Dom is caught before allocating it.
	err = Unmarshal(want[:50], &got)
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "Dom", de.Field)
	assert.ErrorIs(t, err, ErrShort)
}

func TestUnmarshalShortAtEveryPrefix(t *testing.T) {
	values := []any{
		sampleAllTypes(), libvirtErrorSample(),
		node{Val: 1, Next: &node{Val: 2}}, tree{Kids: []tree{{}, {Kids: []tree{{}}}}},
	}
	for _, v := range values {
		t.Run(fmt.Sprintf("%T", v), func(t *testing.T) {
			b, err := Marshal(v)
			require.NoError(t, err)
			require.NoError(t, Unmarshal(b, reflectNew(v)))
			for n := range len(b) {
				err := Unmarshal(b[:n], reflectNew(v))
				require.ErrorIs(t, err, ErrShort, "prefix of %d bytes", n)
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				if n > 0 { // some field was started, so the path names it
					require.NotEmpty(t, de.Field, "prefix of %d bytes", n)
				}
			}
		})
	}
}

func TestUnmarshalErrors(t *testing.T) {
	good, err := Marshal(pair{A: 1, B: "ab"})
	require.NoError(t, err)

	t.Run("trailing bytes", func(t *testing.T) {
		var p pair
		err := Unmarshal(append(good, 0, 0, 0, 0), &p)
		require.ErrorIs(t, err, ErrTrailing)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
	})
	t.Run("bad bool in optional", func(t *testing.T) {
		var e remoteError
		err := Unmarshal(unhex(t, "00000000 00000000 00000002"), &e)
		require.ErrorIs(t, err, ErrBadBool)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "Message", de.Field)
	})
	t.Run("string over tag max", func(t *testing.T) {
		var p typedParam
		err := Unmarshal(unhex(t, "00000051"), &p) // 81 > max=80, rejected before reading
		require.ErrorIs(t, err, ErrTooLong)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "Field", de.Field)
	})
	t.Run("array over tag max", func(t *testing.T) {
		var v struct {
			L []int32 `xdr:"max=2"`
		}
		err := Unmarshal(unhex(t, "00000003 00000001 00000002 00000003"), &v)
		require.ErrorIs(t, err, ErrTooLong)
	})
	t.Run("custom error keeps path", func(t *testing.T) {
		var v struct{ Params []typedParam }
		b := unhex(t, "00000002 00000001 61000000 00000001 00000005 00000001 62000000 00000063")
		err := Unmarshal(b, &v)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "Params[1].Value", de.Field)
		assert.EqualError(t, err, "xdr: Params[1].Value: unknown typed param type 99")
	})
	t.Run("short in array element", func(t *testing.T) {
		var v struct{ Pairs []pair }
		err := Unmarshal(unhex(t, "00000002 00000001 00000000 00000002 00000005 6162"), &v)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "Pairs[1].B", de.Field)
		assert.ErrorIs(t, err, ErrShort)
	})
	t.Run("not a pointer", func(t *testing.T) {
		assert.Error(t, Unmarshal(good, pair{}))
		assert.Error(t, Unmarshal(good, nil))
		assert.Error(t, Unmarshal(good, (*pair)(nil)))
	})
}

func TestMarshalErrors(t *testing.T) {
	t.Run("string over max", func(t *testing.T) {
		_, err := Marshal(typedParam{Field: strings.Repeat("x", 81)})
		require.ErrorIs(t, err, ErrTooLong)
		assert.Contains(t, err.Error(), "Field")
	})
	t.Run("opaque over max", func(t *testing.T) {
		var v struct {
			B []byte `xdr:"max=2"`
		}
		v.B = []byte{1, 2, 3}
		_, err := Marshal(v)
		require.ErrorIs(t, err, ErrTooLong)
	})
	t.Run("char array over max", func(t *testing.T) {
		var v struct {
			B []byte `xdr:"char,max=2"`
		}
		v.B = []byte{1, 2, 3}
		_, err := Marshal(v)
		require.ErrorIs(t, err, ErrTooLong)
	})
	t.Run("array over max nested", func(t *testing.T) {
		v := struct{ A allTypes }{A: allTypes{Strs: make([]string, 9)}}
		_, err := Marshal(v)
		require.ErrorIs(t, err, ErrTooLong)
		assert.Contains(t, err.Error(), "A.Strs")
	})
	t.Run("optional string over max", func(t *testing.T) {
		_, err := Marshal(allTypes{OptStr: ptr(strings.Repeat("x", 17))})
		require.ErrorIs(t, err, ErrTooLong)
	})
	t.Run("custom error keeps path", func(t *testing.T) {
		v := struct{ Params []typedParam }{Params: []typedParam{{Value: typedParamValue{Type: paramInt}}, {Value: typedParamValue{Type: 99}}}}
		_, err := Marshal(v)
		assert.EqualError(t, err, "xdr: encoding Params[1].Value: unknown typed param type 99")
	})
	t.Run("nil", func(t *testing.T) {
		_, err := Marshal(nil)
		assert.Error(t, err)
		_, err = Marshal((*pair)(nil))
		assert.Error(t, err)
	})
}

func TestAppend(t *testing.T) {
	dst := []byte("hdr:")
	out, err := Append(dst, pair{A: 1, B: "x"})
	require.NoError(t, err)
	assert.Equal(t, append([]byte("hdr:"), unhex(t, "00000001 00000001 78000000")...), out)

	out, err = Append(dst, typedParam{Field: strings.Repeat("x", 100)})
	require.Error(t, err)
	assert.Equal(t, []byte("hdr:"), out)
}

func TestUnsupportedTypes(t *testing.T) {
	tests := []struct {
		name string
		v    any
		want string
	}{
		{"int", int(1), "ambiguous"},
		{"uint", uint(1), "ambiguous"},
		{"int8", int8(1), "narrower"},
		{"uint16", uint16(1), "narrower"},
		{"float64", 1.5, "floating"},
		{"map", map[string]int32{}, "no XDR encoding"},
		{"chan", make(chan int), "no XDR encoding"},
		{"func", func() {}, "no XDR encoding"},
		{"interface field", struct{ X any }{}, "interface"},
		{"int field", struct{ N int }{}, "in field N"},
		{"nested int", struct{ P []struct{ N int } }{}, "in field P[].N"},
		{"zero-size elements", []struct{}{}, "zero bytes"},
		{"unknown tag", struct {
			S string `xdr:"maxx=3"`
		}{}, `unknown option "maxx=3"`},
		{"bad max", struct {
			S string `xdr:"max=0"`
		}{}, "positive"},
		{"max on int", struct {
			N int32 `xdr:"max=3"`
		}{}, `"max" applies only`},
		{"max on fixed array", struct {
			A [4]byte `xdr:"max=3"`
		}{}, `"max" applies only`},
		{"char on string", struct {
			S string `xdr:"char"`
		}{}, `"char" applies only`},
		{"char on []int32", struct {
			S []int32 `xdr:"char"`
		}{}, `"char" applies only`},
		{"tag on custom type", struct {
			V typedParamValue `xdr:"max=3"`
		}{}, "own XDR methods"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Marshal(tt.v)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)

			// Unmarshal rejects the type before looking at the input.
			target := reflectNew(tt.v)
			err = Unmarshal(unhex(t, "00000000"), target)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			var de *DecodeError
			assert.False(t, errors.As(err, &de), "a type error is not a decode error")
		})
	}
}

// reflectNew returns a pointer to a new zero value of v's dynamic type.
func reflectNew(v any) any { return reflect.New(reflect.TypeOf(v)).Interface() }

func TestSkippedAndUnexportedFields(t *testing.T) {
	type withSkips struct {
		A       int32
		Ignored map[string]int `xdr:"-"` // unsupported, but skipped
		b       int            // unexported: skipped even though int is rejected
		C       int32
	}
	in := withSkips{A: 1, Ignored: map[string]int{"x": 1}, b: 2, C: 3}
	b, err := Marshal(in)
	require.NoError(t, err)
	assert.Equal(t, unhex(t, "00000001 00000003"), b)
	var got withSkips
	require.NoError(t, Unmarshal(b, &got))
	assert.Equal(t, withSkips{A: 1, C: 3}, got)
}

// valueMarshaler has a value-receiver MarshalXDR and no UnmarshalXDR: each
// direction is chosen independently.
type valueMarshaler struct{ N int32 }

func (v valueMarshaler) MarshalXDR(e *Encoder) error {
	e.Int32(v.N * 2)
	return nil
}

func TestCustomOneDirection(t *testing.T) {
	b, err := Marshal([]valueMarshaler{{N: 1}, {N: 2}})
	require.NoError(t, err)
	assert.Equal(t, unhex(t, "00000002 00000002 00000004"), b)
	var got []valueMarshaler
	require.NoError(t, Unmarshal(b, &got))
	assert.Equal(t, []valueMarshaler{{N: 2}, {N: 4}}, got)
}

// pointerMarshaler has pointer-receiver methods; used by value it is copied.
type pointerMarshaler struct{ S string }

func (p *pointerMarshaler) MarshalXDR(e *Encoder) error { return e.Encode(&p.S) }

func (p *pointerMarshaler) UnmarshalXDR(d *Decoder) error { return d.Decode(&p.S) }

func TestCustomPointerReceiver(t *testing.T) {
	v := struct{ P [2]pointerMarshaler }{P: [2]pointerMarshaler{{"a"}, {"b"}}}
	b, err := Marshal(v) // by value: elements are not addressable
	require.NoError(t, err)
	assert.Equal(t, unhex(t, "00000001 61000000 00000001 62000000"), b)
	var got struct{ P [2]pointerMarshaler }
	require.NoError(t, Unmarshal(b, &got))
	assert.Equal(t, v, got)
}

func TestEncoderDecoderMixWithReflection(t *testing.T) {
	e := NewEncoder(nil)
	e.Uint32(1)
	require.NoError(t, e.Encode(&pair{A: 2, B: "b"}))
	require.Error(t, e.Encode(struct{ N int }{}))
	e.Uint32(3)
	assert.Equal(t, unhex(t, "00000001 00000002 00000001 62000000 00000003"), e.Bytes())

	d := NewDecoder(e.Bytes())
	first, err := d.Uint32()
	require.NoError(t, err)
	var p pair
	require.NoError(t, d.Decode(&p))
	last, err := d.Uint32()
	require.NoError(t, err)
	assert.Equal(t, []any{uint32(1), pair{2, "b"}, uint32(3)}, []any{first, p, last})
	assert.NoError(t, d.Done())
}

func TestDecodeReplacesOldValues(t *testing.T) {
	got := allTypes{Opt: &pair{A: 1}, Ints: []int32{1, 2, 3}, Str: "old"}
	b, err := Marshal(allTypes{})
	require.NoError(t, err)
	require.NoError(t, Unmarshal(b, &got))
	assert.Empty(t, cmp.Diff(allTypes{}, got, cmpopts.EquateEmpty(), cmp.AllowUnexported(allTypes{})))
}

func TestConcurrentPlans(t *testing.T) {
	// Distinct types built concurrently: exercises the plan cache under -race.
	values := []any{sampleAllTypes(), remoteError{}, node{}, tree{}, typedParam{Value: typedParamValue{Type: paramBool}}, [5]pair{}, []*remoteError{}}
	var wg sync.WaitGroup
	for i := range 8 {
		for _, v := range values {
			wg.Go(func() {
				b, err := Marshal(v)
				if err != nil {
					t.Error(err)
					return
				}
				p := reflectNew(v)
				if err := Unmarshal(b, p); err != nil {
					t.Error(i, err)
				}
				b2, err := Marshal(p)
				if err != nil || !bytes.Equal(b, b2) {
					t.Errorf("%T: re-encoding differs: %v", v, err)
				}
			})
		}
	}
	wg.Wait()
}

func TestReflectionAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	type fixedOnly struct {
		A    int32
		B    uint64
		UUID [16]byte
		Opt  *int32
		Arr  [3]bool
	}
	v := fixedOnly{A: 1, B: 2, Opt: ptr(int32(3))}
	buf := make([]byte, 0, 256)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		if buf, err = Append(buf[:0], &v); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "Append into a buffer with room")

	var got fixedOnly
	allocs = testing.AllocsPerRun(100, func() {
		if err := Unmarshal(buf, &got); err != nil {
			t.Fatal(err)
		}
	})
	assert.Equal(t, 1.0, allocs, "only the optional's target")
	assert.Equal(t, v, got)
}
