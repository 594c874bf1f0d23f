package xdr

import "reflect"

var stringType = reflect.TypeFor[string]()

// Codecs for types built from other types: variable and fixed arrays,
// optionals and structs.

// slice handles []T as an XDR variable-length array: a count, then elements.
func (b *builder) slice(c *codec, t reflect.Type, limit int, path string) error {
	elem, err := b.build(t.Elem(), opts{}, joinPath(path, "[]"))
	if err != nil {
		return err
	}
	// A count of elements that take no bytes could not be checked against
	// the input, so a tiny message could demand a huge loop.
	if elem.ready && elem.min == 0 {
		return typeError(t, path, "its elements encode to zero bytes")
	}
	c.min = 4
	c.enc = func(e *Encoder, v reflect.Value) error {
		n := v.Len()
		if err := checkLen(n, limit); err != nil {
			return err
		}
		e.Uint32(uint32(n))
		if n == 0 {
			return nil // an empty array is no level deeper, as the decoder counts
		}
		if err := e.enter(); err != nil {
			return err
		}
		defer e.leave()
		for i := range n {
			if err := elem.enc(e, v.Index(i)); err != nil {
				return encodeIn(err, indexPath(i))
			}
		}
		return nil
	}
	if t.Elem() == stringType {
		c.dec = func(d *Decoder, v reflect.Value) error {
			s, err := d.stringList(limit)
			if err != nil || s == nil {
				v.SetZero()
				return err
			}
			v.Set(reflect.ValueOf(s).Convert(t))
			return nil
		}
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		// elem.min is read now, not at build time: for a recursive type it
		// is only known once the build has finished.
		n, err := d.count(limit, max(elem.min, 1))
		if err != nil {
			return err
		}
		if n == 0 {
			v.SetZero()
			return nil
		}
		if err := d.enter(); err != nil {
			return err
		}
		defer d.leave()
		s := reflect.MakeSlice(t, n, n)
		for i := range n {
			if err := elem.dec(d, s.Index(i)); err != nil {
				return decodeIn(err, indexPath(i))
			}
		}
		v.Set(s)
		return nil
	}
	return nil
}

// array handles [N]T as an XDR fixed-length array: N elements, no count.
func (b *builder) array(c *codec, t reflect.Type, path string) error {
	elem, err := b.build(t.Elem(), opts{}, joinPath(path, "[]"))
	if err != nil {
		return err
	}
	n := t.Len()
	// Go forbids a type containing itself by value, so elem is finished.
	c.min = satMul(n, elem.min)
	if elem.min == 0 {
		// Elements that encode to nothing: skip the (possibly huge) loop.
		c.enc = func(*Encoder, reflect.Value) error { return nil }
		c.dec = func(*Decoder, reflect.Value) error { return nil }
		return nil
	}
	c.enc = func(e *Encoder, v reflect.Value) error {
		for i := range n {
			if err := elem.enc(e, v.Index(i)); err != nil {
				return encodeIn(err, indexPath(i))
			}
		}
		return nil
	}
	minSize := c.min
	c.dec = func(d *Decoder, v reflect.Value) error {
		// Fail before a long loop on input that is obviously too short.
		if minSize > d.Remaining() {
			return d.short(uint64(minSize))
		}
		for i := range n {
			if err := elem.dec(d, v.Index(i)); err != nil {
				return decodeIn(err, indexPath(i))
			}
		}
		return nil
	}
	return nil
}

// pointer handles *T as an XDR optional (`T *x`): a bool, then T if true.
// Tag options pass through to T.
func (b *builder) pointer(c *codec, t reflect.Type, o opts, path string) error {
	elem, err := b.build(t.Elem(), o, path)
	if err != nil {
		return err
	}
	c.min = 4
	c.enc = func(e *Encoder, v reflect.Value) error {
		if v.IsNil() {
			e.Bool(false)
			return nil
		}
		if err := e.enter(); err != nil {
			return err
		}
		defer e.leave()
		e.Bool(true)
		return elem.enc(e, v.Elem())
	}
	et := t.Elem()
	c.dec = func(d *Decoder, v reflect.Value) error {
		ok, err := d.Bool()
		if err != nil {
			return err
		}
		if !ok {
			v.SetZero()
			return nil
		}
		// T may be large (say *[1 << 20]byte): make the input justify it.
		if elem.min > d.Remaining() {
			return d.short(uint64(elem.min))
		}
		if err := d.enter(); err != nil {
			return err
		}
		defer d.leave()
		p := reflect.New(et)
		if err := elem.dec(d, p.Elem()); err != nil {
			return err
		}
		v.Set(p)
		return nil
	}
	return nil
}

// structure handles a struct as an XDR struct: its exported fields in
// declaration order. Unexported fields and fields tagged `xdr:"-"` are
// skipped.
func (b *builder) structure(c *codec, t reflect.Type, path string) error {
	var fields []field
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		fpath := joinPath(path, f.Name)
		o, skip, err := parseTag(f.Tag.Get("xdr"))
		if err != nil {
			return tagError(f.Type, fpath, err.Error())
		}
		if skip {
			continue
		}
		fc, err := b.build(f.Type, o, fpath)
		if err != nil {
			return err
		}
		fields = append(fields, field{index: i, name: f.Name, c: fc})
		c.min = satAdd(c.min, fc.min)
	}
	c.enc = func(e *Encoder, v reflect.Value) error {
		for _, f := range fields {
			if err := f.c.enc(e, v.Field(f.index)); err != nil {
				return encodeIn(err, f.name)
			}
		}
		return nil
	}
	c.dec = func(d *Decoder, v reflect.Value) error {
		for _, f := range fields {
			if err := f.c.dec(d, v.Field(f.index)); err != nil {
				return decodeIn(err, f.name)
			}
		}
		return nil
	}
	return nil
}
