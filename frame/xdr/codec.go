package xdr

import (
	"errors"
	"fmt"
	"reflect"
)

// Marshal returns the XDR encoding of v. See the package documentation for
// how Go types map to XDR. A pointer argument is followed, not treated as
// an optional.
func Marshal(v any) ([]byte, error) { return Append(nil, v) }

// Append appends the XDR encoding of v to dst. On error it returns dst
// unchanged (its spare capacity may have been written).
func Append(dst []byte, v any) ([]byte, error) {
	e := Encoder{buf: dst}
	if err := e.Encode(v); err != nil {
		return dst, err
	}
	return e.buf, nil
}

// Unmarshal decodes b into v, which must be a non-nil pointer. The whole
// of b must be one value: trailing bytes are an error wrapping ErrTrailing.
// Decode errors are *DecodeError values naming the failing field.
func Unmarshal(b []byte, v any) error {
	d := Decoder{b: b}
	if err := d.Decode(v); err != nil {
		return err
	}
	return d.Done()
}

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
