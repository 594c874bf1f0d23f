package xdr

import "encoding/binary"

// Encoder appends XDR items to a byte slice. Every method is an append, so an
// Encoder over a buffer with enough capacity does not allocate.
//
// Lengths are written as 32-bit words; the caller must keep strings and
// slices under 4 GiB (Marshal checks this, the raw methods cannot report it).
type Encoder struct {
	buf   []byte
	depth int // nesting of optionals, arrays and custom marshalers
}

// NewEncoder returns an Encoder that appends to buf, which may be nil.
func NewEncoder(buf []byte) *Encoder { return &Encoder{buf: buf} }

// Bytes returns the buffer with everything appended so far.
func (e *Encoder) Bytes() []byte { return e.buf }

// Reset makes e append to buf, typically a previous Bytes()[:0] to reuse it.
func (e *Encoder) Reset(buf []byte) {
	e.buf = buf
	e.depth = 0
}

// Uint32 appends an XDR unsigned int.
func (e *Encoder) Uint32(v uint32) { e.buf = binary.BigEndian.AppendUint32(e.buf, v) }

// Int32 appends an XDR int (two's complement).
func (e *Encoder) Int32(v int32) { e.Uint32(uint32(v)) }

// Uint64 appends an XDR unsigned hyper.
func (e *Encoder) Uint64(v uint64) { e.buf = binary.BigEndian.AppendUint64(e.buf, v) }

// Int64 appends an XDR hyper.
func (e *Encoder) Int64(v int64) { e.Uint64(uint64(v)) }

// Bool appends an XDR bool: a word holding 0 or 1.
func (e *Encoder) Bool(v bool) {
	var w uint32
	if v {
		w = 1
	}
	e.Uint32(w)
}

// String appends an XDR string: length word, bytes, zero padding to 4.
func (e *Encoder) String(s string) {
	e.Uint32(uint32(len(s)))
	e.buf = append(e.buf, s...)
	e.pad(len(s))
}

// Opaque appends variable-length XDR opaque data: length word, bytes, padding.
func (e *Encoder) Opaque(b []byte) {
	e.Uint32(uint32(len(b)))
	e.FixedOpaque(b)
}

// FixedOpaque appends fixed-length opaque data: the bytes and padding, no
// length word (the length is part of the protocol definition).
func (e *Encoder) FixedOpaque(b []byte) {
	e.buf = append(e.buf, b...)
	e.pad(len(b))
}

// CharArray appends libvirt's `char x<N>` array. XDR has no byte type, so
// rpcgen encodes each char as its own int: a count word, then one
// sign-extended 4-byte word per byte (0xff becomes ffffffff, as C char does).
func (e *Encoder) CharArray(b []byte) {
	e.Uint32(uint32(len(b)))
	for _, c := range b {
		e.Int32(int32(int8(c)))
	}
}

// OptionalString appends an XDR optional string (`string *x`): a bool, then
// the string when s is non-nil.
func (e *Encoder) OptionalString(s *string) {
	e.Bool(s != nil)
	if s != nil {
		e.String(*s)
	}
}

var zeros [4]byte

// pad appends the zero bytes that round n up to a multiple of 4.
func (e *Encoder) pad(n int) {
	if p := padLen(n); p != 0 {
		e.buf = append(e.buf, zeros[:p]...)
	}
}

// padLen is how many bytes round n up to a multiple of 4.
func padLen[T int | uint32](n T) T { return (4 - n&3) & 3 }

// enter and leave bound recursion so cyclic pointer graphs fail cleanly
// instead of exhausting the stack.
func (e *Encoder) enter() error {
	if e.depth >= maxDepth {
		return ErrTooDeep
	}
	e.depth++
	return nil
}

func (e *Encoder) leave() { e.depth-- }
