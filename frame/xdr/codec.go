package xdr

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
)

// minGrow is spare room for the variable-length parts of a value;
// maxPreGrow caps how much Encode reserves from the type alone.
const (
	minGrow    = 64
	maxPreGrow = 64 << 10
)

// Marshal returns the XDR encoding of v. See the package documentation for
// how Go types map to XDR. A pointer argument is followed, not treated as
// an optional.
func Marshal(v any) ([]byte, error) { return Append(nil, v) }

// Append appends the XDR encoding of v to dst. On error it returns dst
// unchanged (its spare capacity may have been written).
func Append(dst []byte, v any) ([]byte, error) {
	e := encoders.Get().(*Encoder)
	e.Reset(dst)
	err := e.Encode(v)
	out := e.buf
	e.Reset(nil)
	encoders.Put(e)
	if err != nil {
		return dst, err
	}
	return out, nil
}

// Unmarshal decodes b into v, which must be a non-nil pointer. The whole
// of b must be one value: trailing bytes are an error wrapping ErrTrailing.
// Decode errors are *DecodeError values naming the failing field.
func Unmarshal(b []byte, v any) error {
	d := decoders.Get().(*Decoder)
	*d = Decoder{b: b}
	err := d.Decode(v)
	if err == nil {
		err = d.Done()
	}
	*d = Decoder{}
	decoders.Put(d)
	return err
}

// The codecs are called through func values, so an Encoder or Decoder on
// the stack would escape; pooling them keeps Append and Unmarshal from
// allocating one per call. MarshalXDR and UnmarshalXDR methods must not
// retain the Encoder or Decoder they are given.
var (
	encoders = sync.Pool{New: func() any { return new(Encoder) }}
	decoders = sync.Pool{New: func() any { return new(Decoder) }}
)

// Encode appends v using the reflection codec, like Append. It lets a
// MarshalXDR method delegate parts of its value. On error nothing is
// appended.
func (e *Encoder) Encode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return errors.New("xdr: cannot encode a nil pointer")
		}
		rv = rv.Elem()
	}
	if !rv.IsValid() {
		return errors.New("xdr: cannot encode nil")
	}
	c, err := planFor(rv.Type(), false)
	if err != nil {
		return err
	}
	// Every encoding takes at least c.min bytes, so growing by that much up
	// front is never wasted and saves Marshal repeated small reallocations.
	// Capped: huge values grow as they are written, as they would anyway.
	e.buf = slices.Grow(e.buf, min(c.min, maxPreGrow)+minGrow)
	start := len(e.buf)
	if err := c.enc(e, rv); err != nil {
		e.buf = e.buf[:start]
		if _, ok := err.(*encodeError); !ok {
			err = &encodeError{err: err}
		}
		return err
	}
	return nil
}

// Decode reads one value into v, a non-nil pointer, using the reflection
// codec. Unlike Unmarshal it does not require the input to end there, so an
// UnmarshalXDR method can use it for parts of its value.
func (d *Decoder) Decode(v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("xdr: decode target must be a non-nil pointer, not %T", v)
	}
	c, err := planFor(rv.Type().Elem(), true)
	if err != nil {
		return err
	}
	if err := c.dec(d, rv.Elem()); err != nil {
		if _, ok := err.(*DecodeError); !ok {
			err = &DecodeError{Err: err}
		}
		return err
	}
	return nil
}
