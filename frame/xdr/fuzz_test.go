package xdr

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzUnmarshal decodes arbitrary bytes into representative types. Decoding
// may fail but only with a *DecodeError; whatever decodes must re-encode to
// the same number of bytes (XDR has no optional whitespace: only padding,
// char-array high bytes and nothing else may differ) and decode again to
// the same value.
func FuzzUnmarshal(f *testing.F) {
	head := &node{Val: 1, Next: &node{Val: 2}}
	for _, v := range []any{sampleAllTypes(), libvirtErrorSample(), head, tree{Kids: []tree{{}, {Kids: []tree{{}}}}}, sampleAllTypes().Params} {
		b, err := Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzRoundTrip[allTypes](t, data)
		fuzzRoundTrip[remoteError](t, data)
		fuzzRoundTrip[node](t, data)
		fuzzRoundTrip[tree](t, data)
		fuzzRoundTrip[[]typedParam](t, data)
	})
}

func libvirtErrorSample() remoteError {
	return remoteError{
		Code: 42, Domain: 10, Message: ptr("Domain not found"), Level: 2,
		Dom:  &remoteNonnullDomain{Name: "vm1", ID: 3},
		Str1: ptr("vm1"), Int1: -1,
	}
}

func fuzzRoundTrip[T any](t *testing.T, data []byte) {
	var v T
	if err := Unmarshal(data, &v); err != nil {
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("%T: decode error is not a *DecodeError: %v", v, err)
		}
		return
	}
	b, err := Marshal(&v)
	if err != nil {
		t.Fatalf("%T: decoded value does not re-encode: %v", v, err)
	}
	if len(b) != len(data) {
		t.Fatalf("%T: re-encoded %d bytes from %d", v, len(b), len(data))
	}
	var v2 T
	if err := Unmarshal(b, &v2); err != nil {
		t.Fatalf("%T: re-encoding does not decode: %v", v, err)
	}
	// Both values come from Decode, which always leaves empty slices nil, so
	// DeepEqual is exact. cmp.Diff only renders a failure: it takes time
	// exponential in nesting depth on equal nested slices such as tree.
	if !reflect.DeepEqual(v, v2) {
		diff := cmp.Diff(v, v2, cmp.AllowUnexported(allTypes{}))
		t.Fatalf("%T: value changed in a round trip (-first +second):\n%s", v, diff)
	}
	b2, err := Marshal(&v2)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("%T: canonical encoding is not stable: %v", v, err)
	}
}
