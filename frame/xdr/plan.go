package xdr

import (
	"fmt"
	"maps"
	"math"
	"reflect"
	"sync"
)

// maxDepth bounds nesting of optionals, variable-length arrays and custom
// marshalers. Those are the only ways a Go type can refer to itself, so they
// are the only way input (or a cyclic value) can drive unbounded recursion.
const maxDepth = 64

// maxMinSize caps computed minimum sizes so that count*minSize, with a
// 32-bit count, cannot overflow uint64.
const maxMinSize = math.MaxInt32

// codec encodes and decodes one Go type (plus its tag options). A codec is
// built for one direction and only that direction's func is used.
type codec struct {
	enc func(e *Encoder, v reflect.Value) error
	dec func(d *Decoder, v reflect.Value) error
	// min is the fewest bytes any encoding of the type occupies. Decoding
	// checks count*min against the remaining input before allocating.
	min int
	// ready is false while a recursive type is still being built; its min
	// is not known yet.
	ready bool
}

type field struct {
	index int
	name  string
	c     *codec
}

type planKey struct {
	t   reflect.Type
	o   opts
	dec bool
}

type plan struct {
	c   *codec
	err error
}

var (
	// Top-level plans, keyed by reflect.Type alone so lookups do not allocate.
	encPlans, decPlans sync.Map

	// buildMu serializes building; built holds finished codecs so types
	// shared between top-level types are built once.
	buildMu sync.Mutex
	built   = map[planKey]*codec{}
)

// planFor returns the cached codec for t, building it on first use. Errors
// (unsupported types, bad tags) are cached too, so they stay cheap.
func planFor(t reflect.Type, dec bool) (*codec, error) {
	plans := &encPlans
	if dec {
		plans = &decPlans
	}
	if p, ok := plans.Load(t); ok {
		p := p.(*plan)
		return p.c, p.err
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := plans.Load(t); ok {
		p := p.(*plan)
		return p.c, p.err
	}
	b := builder{dec: dec, seen: map[planKey]*codec{}}
	c, err := b.build(t, opts{}, "")
	if err == nil {
		maps.Copy(built, b.seen)
	}
	plans.Store(t, &plan{c: c, err: err})
	return c, err
}

// builder builds the codecs for one top-level type. Registering a codec in
// seen before filling it lets recursive types (type List struct{ Next *List })
// refer to themselves.
type builder struct {
	dec  bool
	seen map[planKey]*codec
}

func (b *builder) build(t reflect.Type, o opts, path string) (*codec, error) {
	k := planKey{t: t, o: o, dec: b.dec}
	if c, ok := built[k]; ok {
		return c, nil
	}
	if c, ok := b.seen[k]; ok {
		return c, nil
	}
	c := &codec{}
	b.seen[k] = c
	if err := b.fill(c, t, o, path); err != nil {
		return nil, err
	}
	c.ready = true
	return c, nil
}

func (b *builder) fill(c *codec, t reflect.Type, o opts, path string) error {
	k := t.Kind()
	// Pointers are always XDR optionals, so only non-pointer types are
	// checked for custom methods (pointer receivers included).
	if k != reflect.Pointer && k != reflect.Interface && b.custom(c, t) {
		if o != (opts{}) {
			return tagError(t, path, "options do not apply to a type with its own XDR methods")
		}
		return nil
	}
	isBytes := (k == reflect.Slice || k == reflect.Array) && t.Elem().Kind() == reflect.Uint8 && !hasAnyCustom(t.Elem())
	if o.char && !(k == reflect.Pointer || k == reflect.Slice && isBytes) {
		return tagError(t, path, `option "char" applies only to []byte`)
	}
	if o.max > 0 && k != reflect.Pointer && k != reflect.String && k != reflect.Slice {
		return tagError(t, path, `option "max" applies only to strings, []byte and slices`)
	}
	switch k {
	case reflect.Bool:
		boolCodec(c)
	case reflect.Int32, reflect.Int64:
		intCodec(c, k == reflect.Int64)
	case reflect.Uint32, reflect.Uint64:
		uintCodec(c, k == reflect.Uint64)
	case reflect.String:
		stringCodec(c, o.max)
	case reflect.Slice:
		if isBytes {
			bytesCodec(c, o)
			return nil
		}
		return b.slice(c, t, o.max, path)
	case reflect.Array:
		if isBytes {
			fixedBytesCodec(c, t.Len())
			return nil
		}
		return b.array(c, t, path)
	case reflect.Pointer:
		return b.pointer(c, t, o, path)
	case reflect.Struct:
		return b.structure(c, t, path)
	case reflect.Int, reflect.Uint, reflect.Uintptr:
		return typeError(t, path, "its XDR size is ambiguous; use int32, uint32, int64 or uint64")
	case reflect.Int8, reflect.Int16, reflect.Uint8, reflect.Uint16:
		return typeError(t, path, "XDR has no integers narrower than 32 bits; use int32 or uint32 ([]byte and [N]byte for bytes)")
	case reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return typeError(t, path, "floating point is not supported")
	case reflect.Interface:
		return typeError(t, path, "an interface has no fixed encoding; implement MarshalXDR/UnmarshalXDR on a concrete type")
	default:
		return typeError(t, path, "no XDR encoding")
	}
	return nil
}

func typeError(t reflect.Type, path, why string) error {
	if path == "" {
		return fmt.Errorf("xdr: unsupported type %s: %s", t, why)
	}
	return fmt.Errorf("xdr: unsupported type %s in field %s: %s", t, path, why)
}

func tagError(t reflect.Type, path, why string) error {
	return fmt.Errorf("xdr: bad tag on field %s (type %s): %s", path, t, why)
}

// checkLen enforces a tag's max on Marshal, so we never send what the peer
// would reject, and the 32-bit length word.
func checkLen(n, limit int) error {
	if limit > 0 && n > limit {
		return fmt.Errorf("%w: %d > %d", ErrTooLong, n, limit)
	}
	if uint64(n) > math.MaxUint32 {
		return fmt.Errorf("%w: %d does not fit a 32-bit length", ErrTooLong, n)
	}
	return nil
}

// satAdd and satMul keep minimum sizes bounded for absurdly large types.
func satAdd(a, b int) int { return int(min(int64(a)+int64(b), maxMinSize)) }

func satMul(a, b int) int {
	if a != 0 && b > maxMinSize/a {
		return maxMinSize
	}
	return a * b
}
