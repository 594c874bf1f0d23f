package xdr

import "reflect"

// Codecs for types that map onto a single XDR item. Kinds, not exact types,
// are matched, so named types such as `type State int32` work too.

func boolCodec(c *codec) {
	c.min = 4
	c.enc = func(e *Encoder, v reflect.Value) error {
		e.Bool(v.Bool())
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		x, err := d.Bool()
		v.SetBool(x)
		return err
	}
}

func intCodec(c *codec, hyper bool) {
	if hyper {
		c.min = 8
		c.enc = func(e *Encoder, v reflect.Value) error {
			e.Int64(v.Int())
			return nil
		}
		c.dec = func(d *Decoder, v reflect.Value) error {
			x, err := d.Int64()
			v.SetInt(x)
			return err
		}
		return
	}
	c.min = 4
	c.enc = func(e *Encoder, v reflect.Value) error {
		e.Int32(int32(v.Int()))
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		x, err := d.Int32()
		v.SetInt(int64(x))
		return err
	}
}

func uintCodec(c *codec, hyper bool) {
	if hyper {
		c.min = 8
		c.enc = func(e *Encoder, v reflect.Value) error {
			e.Uint64(v.Uint())
			return nil
		}
		c.dec = func(d *Decoder, v reflect.Value) error {
			x, err := d.Uint64()
			v.SetUint(x)
			return err
		}
		return
	}
	c.min = 4
	c.enc = func(e *Encoder, v reflect.Value) error {
		e.Uint32(uint32(v.Uint()))
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		x, err := d.Uint32()
		v.SetUint(uint64(x))
		return err
	}
}

func stringCodec(c *codec, limit int) {
	c.min = 4
	c.enc = func(e *Encoder, v reflect.Value) error {
		s := v.String()
		if err := checkLen(len(s), limit); err != nil {
			return err
		}
		e.String(s)
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		s, err := d.String(limit)
		if err != nil {
			return err
		}
		v.SetString(s)
		return nil
	}
}

// bytesCodec handles []byte: variable-length opaque, or libvirt's char
// array when tagged `xdr:"char"`.
func bytesCodec(c *codec, o opts) {
	c.min = 4
	limit := o.max
	write, read := (*Encoder).Opaque, (*Decoder).Opaque
	if o.char {
		write, read = (*Encoder).CharArray, (*Decoder).CharArray
	}
	c.enc = func(e *Encoder, v reflect.Value) error {
		b := v.Bytes()
		if err := checkLen(len(b), limit); err != nil {
			return err
		}
		write(e, b)
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		b, err := read(d, limit)
		if err != nil {
			return err
		}
		v.SetBytes(b)
		return nil
	}
}

// fixedBytesCodec handles [N]byte as fixed-length opaque, e.g. a UUID.
func fixedBytesCodec(c *codec, n int) {
	c.min = satAdd(n, padLen(n))
	c.enc = func(e *Encoder, v reflect.Value) error {
		if v.CanAddr() {
			e.FixedOpaque(v.Bytes())
			return nil
		}
		// An array inside a value passed by value cannot be sliced.
		for i := range n {
			e.buf = append(e.buf, byte(v.Index(i).Uint()))
		}
		e.pad(n)
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		b, err := d.fixed(n)
		if err != nil {
			return err
		}
		copy(v.Bytes(), b) // decode targets are always addressable
		return nil
	}
}
