// Package xdr encodes and decodes XDR (RFC 4506), the wire format of
// libvirt's RPC payloads.
//
// It has two layers. Encoder and Decoder write and read single XDR items
// and suit hand-written code on hot paths: an Encoder appending to a buffer
// with room does not allocate. Marshal, Append and Unmarshal map Go values
// onto XDR by reflection, with a plan per type built once and cached.
//
// # Type mapping
//
//	bool                    bool
//	int32, uint32           int, unsigned int
//	int64, uint64           hyper, unsigned hyper
//	string                  string<>
//	[]byte                  opaque<>
//	[N]byte                 opaque[N]            (e.g. a UUID)
//	[]T                     T<>                  (count, then elements)
//	[N]T                    T[N]
//	*T                      T *                  (optional: bool, then T)
//	struct                  struct               (exported fields in order)
//
// Named types are mapped by their underlying kind. int, uint, narrower
// integers, floats, maps, interfaces, channels and funcs are rejected when
// Marshal or Unmarshal first meets the type, because they have no single
// XDR encoding. Types implementing Marshaler or Unmarshaler, such as
// discriminated unions, encode themselves; they may call Encoder.Encode and
// Decoder.Decode for their parts.
//
// # Struct tags
//
//	`xdr:"max=65536"`   bound a string, []byte or slice length: Unmarshal
//	                    rejects longer input, Marshal refuses longer values
//	`xdr:"char"`        encode a []byte as libvirt's `char x<N>` array,
//	                    each byte widened to a 4-byte word
//	`xdr:"-"`           skip the field
//
// Options combine with commas ("char,max=1024") and apply through
// pointers, so a max on a *string bounds the string.
//
// # Hostile input
//
// Decoding never panics on bad input and never allocates more than a small
// multiple of the input's size: every length and count is checked against
// the remaining input (and any max) before allocation, using the smallest
// encoding of the element type. Optionals, variable-length arrays and custom
// unmarshalers may nest 64 deep, which stops self-referential types such as
// linked lists from exhausting the stack. Failures are *DecodeError values
// carrying the field path and wrapping ErrShort, ErrTooLong, ErrBadBool,
// ErrTrailing or ErrTooDeep. Non-zero padding is accepted.
//
// The multiple is the Go size of an element over its smallest encoding:
// 2× for an array of absent optionals (8-byte pointers for 4-byte bools),
// 4× for a []string of empty strings (16-byte string headers for 4-byte
// lengths), 6× for an array of empty arrays (24-byte slice headers). A
// []string is decoded in one allocation for the slice and one for all its
// bytes, which the strings share: never one allocation per string. Bound
// counts a peer controls with `xdr:"max=N"`.
package xdr
