package xdr

import (
	"encoding/binary"
	"strings"
)

// Decoder reads XDR items from a byte slice. Each length and count is
// checked against the remaining input, and against the caller's limit,
// before anything is allocated, so hostile input cannot make it allocate
// more than a small multiple of the input size.
//
// Padding bytes are skipped without checking that they are zero: some
// encoders leave garbage there and rejecting it buys no safety.
type Decoder struct {
	b     []byte // unread input
	depth int    // nesting of optionals, arrays and custom unmarshalers
}

// NewDecoder returns a Decoder reading b. The Decoder never modifies b and
// never returns slices aliasing it.
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Remaining reports how many input bytes are unread.
func (d *Decoder) Remaining() int { return len(d.b) }

// Done returns an error wrapping ErrTrailing if unread bytes remain. A
// message must be consumed exactly; leftovers mean the two sides disagree
// on its type.
func (d *Decoder) Done() error {
	if len(d.b) != 0 {
		return decodeErr(ErrTrailing, "%d bytes left", len(d.b))
	}
	return nil
}

// Uint32 reads an XDR unsigned int.
func (d *Decoder) Uint32() (uint32, error) {
	if len(d.b) < 4 {
		return 0, d.short(4)
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v, nil
}

// Int32 reads an XDR int.
func (d *Decoder) Int32() (int32, error) {
	v, err := d.Uint32()
	return int32(v), err
}

// Uint64 reads an XDR unsigned hyper.
func (d *Decoder) Uint64() (uint64, error) {
	if len(d.b) < 8 {
		return 0, d.short(8)
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v, nil
}

// Int64 reads an XDR hyper.
func (d *Decoder) Int64() (int64, error) {
	v, err := d.Uint64()
	return int64(v), err
}

// Bool reads an XDR bool; any value other than 0 or 1 is an error wrapping
// ErrBadBool, since XDR bool is an enum with exactly two members.
func (d *Decoder) Bool() (bool, error) {
	v, err := d.Uint32()
	if err != nil {
		return false, err
	}
	switch v {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, decodeErr(ErrBadBool, "value %d", v)
}

// String reads an XDR string of at most limit bytes; limit <= 0 means the
// remaining input is the only bound.
func (d *Decoder) String(limit int) (string, error) {
	b, err := d.opaque(limit)
	return string(b), err
}

// Opaque reads variable-length opaque data of at most limit bytes (limit <= 0:
// no limit beyond the input). The result is a copy; it is nil when empty.
func (d *Decoder) Opaque(limit int) ([]byte, error) {
	b, err := d.opaque(limit)
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// FixedOpaque reads n bytes of fixed-length opaque data plus padding. The
// result is a copy; it is nil when n is 0.
func (d *Decoder) FixedOpaque(n int) ([]byte, error) {
	b, err := d.fixed(n)
	if err != nil || n == 0 {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// CharArray reads libvirt's `char x<N>` array (see Encoder.CharArray) of at
// most limit elements (limit <= 0: no limit beyond the input). Each element
// contributes the low byte of its word; the upper bytes are ignored, like
// padding, because only the low byte carries data. The result is nil when empty.
func (d *Decoder) CharArray(limit int) ([]byte, error) {
	n, err := d.count(limit, 4)
	if err != nil || n == 0 {
		return nil, err
	}
	out := make([]byte, n)
	for i := range out {
		out[i] = d.b[4*i+3]
	}
	d.b = d.b[4*n:]
	return out, nil
}

// stringList reads an XDR array of strings of at most limit elements
// (limit <= 0: no limit beyond the input). The array is checked whole
// before anything is allocated, then the slice is allocated once and every
// string is a substring of one shared copy of the bytes: 16 bytes per
// element plus the string bytes, never one allocation per string. The
// result is nil when empty.
func (d *Decoder) stringList(limit int) ([]string, error) {
	n, err := d.count(limit, 4)
	if err != nil || n == 0 {
		return nil, err
	}
	if err := d.enter(); err != nil { // as the generic array decoder counts depth
		return nil, err
	}
	defer d.leave()
	// Three passes over the input: check and sum the lengths, copy the
	// bytes into one string, cut it into the elements.
	start := *d
	scan := start
	total := 0
	for i := range n {
		b, err := scan.opaque(0)
		if err != nil {
			return nil, decodeIn(err, indexPath(i))
		}
		total += len(b)
	}
	var sb strings.Builder
	sb.Grow(total)
	for range n {
		b, _ := d.opaque(0) // checked above
		sb.Write(b)
	}
	all := sb.String()
	out := make([]string, n)
	off := 0
	for i := range out {
		b, _ := start.opaque(0)
		out[i] = all[off : off+len(b)]
		off += len(b)
	}
	return out, nil
}

// OptionalString reads an XDR optional string (`string *x`) of at most limit
// bytes; it returns nil when the string is absent.
func (d *Decoder) OptionalString(limit int) (*string, error) {
	ok, err := d.Bool()
	if err != nil || !ok {
		return nil, err
	}
	s, err := d.String(limit)
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// opaque reads a length-prefixed byte run and returns it without copying.
func (d *Decoder) opaque(limit int) ([]byte, error) {
	n, err := d.Uint32()
	if err != nil {
		return nil, err
	}
	if limit > 0 && uint64(n) > uint64(limit) {
		return nil, decodeErr(ErrTooLong, "%d > %d", n, limit)
	}
	// Checked in uint64 so that n near 2^32 cannot wrap.
	if need := uint64(n) + uint64(padLen(n)); need > uint64(len(d.b)) {
		return nil, d.short(need)
	}
	b := d.b[:n:n]
	d.b = d.b[int(n)+int(padLen(n)):]
	return b, nil
}

// fixed returns the next n bytes without copying and skips their padding.
func (d *Decoder) fixed(n int) ([]byte, error) {
	if n < 0 {
		return nil, &DecodeError{Err: errNegative}
	}
	// Compared without adding first, so a huge n cannot wrap.
	if n > len(d.b) || padLen(n) > len(d.b)-n {
		return nil, d.short(uint64(n) + uint64(padLen(n)))
	}
	b := d.b[:n:n]
	d.b = d.b[n+padLen(n):]
	return b, nil
}

// count reads an array count and checks it against limit and against the
// input: each element takes at least minSize bytes, so a count the input
// cannot hold is rejected before the caller allocates count elements.
func (d *Decoder) count(limit, minSize int) (int, error) {
	n, err := d.Uint32()
	if err != nil {
		return 0, err
	}
	if limit > 0 && uint64(n) > uint64(limit) {
		return 0, decodeErr(ErrTooLong, "count %d > %d", n, limit)
	}
	// minSize is capped at maxMinSize, so this product fits in uint64.
	if need := uint64(n) * uint64(minSize); need > uint64(len(d.b)) {
		return 0, decodeErr(ErrShort, "count %d needs at least %d bytes, have %d", n, need, len(d.b))
	}
	return int(n), nil
}

func (d *Decoder) short(need uint64) error {
	return decodeErr(ErrShort, "need %d bytes, have %d", need, len(d.b))
}

// enter and leave bound recursion so deeply nested hostile input fails with
// ErrTooDeep instead of exhausting the stack.
func (d *Decoder) enter() error {
	if d.depth >= maxDepth {
		return &DecodeError{Err: ErrTooDeep}
	}
	d.depth++
	return nil
}

func (d *Decoder) leave() { d.depth-- }
