package xdr

import "reflect"

// Marshaler is implemented by types that write their own XDR, such as
// discriminated unions, which have no natural Go struct shape.
type Marshaler interface {
	MarshalXDR(*Encoder) error
}

// Unmarshaler is implemented by types that read their own XDR. The codec
// assumes such a type encodes to at least 4 bytes (true of every XDR value
// except void) when bounding array counts.
type Unmarshaler interface {
	UnmarshalXDR(*Decoder) error
}

var (
	marshalerType   = reflect.TypeFor[Marshaler]()
	unmarshalerType = reflect.TypeFor[Unmarshaler]()
)

// hasCustom reports whether t has a method for the builder's direction.
func (b *builder) hasCustom(t reflect.Type) bool {
	if b.dec {
		return reflect.PointerTo(t).Implements(unmarshalerType)
	}
	return reflect.PointerTo(t).Implements(marshalerType)
}

// hasAnyCustom reports whether t has a method for either direction. It
// decides whether []T with byte-kind T is opaque data, and must give both
// directions the same answer.
func hasAnyCustom(t reflect.Type) bool {
	pt := reflect.PointerTo(t)
	return pt.Implements(marshalerType) || pt.Implements(unmarshalerType)
}

// custom makes c call t's own method for the builder's direction, if it has
// one. Each direction is decided separately, so a type may customize only
// one side. Calls count toward the nesting limit because a method may call
// Encode or Decode on a value of its own type.
func (b *builder) custom(c *codec, t reflect.Type) bool {
	if !b.hasCustom(t) {
		return false
	}
	c.min = 4
	if b.dec {
		c.dec = func(d *Decoder, v reflect.Value) error {
			if err := d.enter(); err != nil {
				return err
			}
			defer d.leave()
			return v.Addr().Interface().(Unmarshaler).UnmarshalXDR(d)
		}
		return true
	}
	valueRecv := t.Implements(marshalerType)
	c.enc = func(e *Encoder, v reflect.Value) error {
		if err := e.enter(); err != nil {
			return err
		}
		defer e.leave()
		switch {
		case valueRecv:
			return v.Interface().(Marshaler).MarshalXDR(e)
		case !v.CanAddr():
			// Pointer receiver on a value passed by value: use a copy.
			p := reflect.New(t)
			p.Elem().Set(v)
			v = p.Elem()
		}
		return v.Addr().Interface().(Marshaler).MarshalXDR(e)
	}
	return true
}
