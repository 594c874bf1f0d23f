package xdr

import "fmt"

// Types shared by the codec tests, the fuzz target and the benchmarks.

// remoteNonnullDomain mirrors libvirt's remote_nonnull_domain.
type remoteNonnullDomain struct {
	Name string `xdr:"max=4194304"`
	UUID [16]byte
	ID   int32
}

// remoteNonnullNetwork mirrors libvirt's remote_nonnull_network.
type remoteNonnullNetwork struct {
	Name string `xdr:"max=4194304"`
	UUID [16]byte
}

// remoteError mirrors libvirt's remote_error, the body of every failed reply.
type remoteError struct {
	Code    int32
	Domain  int32
	Message *string `xdr:"max=4194304"`
	Level   int32
	Dom     *remoteNonnullDomain
	Str1    *string `xdr:"max=4194304"`
	Str2    *string `xdr:"max=4194304"`
	Str3    *string `xdr:"max=4194304"`
	Int1    int32
	Int2    int32
	Net     *remoteNonnullNetwork
}

// typedParamValue mirrors libvirt's remote_typed_param_value, a
// discriminated union, so it encodes itself.
type typedParamValue struct {
	Type int32
	I    int32
	UI   uint32
	L    int64
	B    bool
	S    string
}

const (
	paramInt    = 1
	paramUInt   = 2
	paramLLong  = 3
	paramBool   = 6
	paramString = 7
)

func (v *typedParamValue) MarshalXDR(e *Encoder) error {
	e.Int32(v.Type)
	switch v.Type {
	case paramInt:
		e.Int32(v.I)
	case paramUInt:
		e.Uint32(v.UI)
	case paramLLong:
		e.Int64(v.L)
	case paramBool:
		e.Bool(v.B)
	case paramString:
		e.String(v.S)
	default:
		return fmt.Errorf("unknown typed param type %d", v.Type)
	}
	return nil
}

func (v *typedParamValue) UnmarshalXDR(d *Decoder) error {
	var err error
	*v = typedParamValue{}
	if v.Type, err = d.Int32(); err != nil {
		return err
	}
	switch v.Type {
	case paramInt:
		v.I, err = d.Int32()
	case paramUInt:
		v.UI, err = d.Uint32()
	case paramLLong:
		v.L, err = d.Int64()
	case paramBool:
		v.B, err = d.Bool()
	case paramString:
		v.S, err = d.String(65536)
	default:
		err = fmt.Errorf("unknown typed param type %d", v.Type)
	}
	return err
}

type typedParam struct {
	Field string `xdr:"max=80"`
	Value typedParamValue
}

type state int32

type blob []byte

type octet byte

type uuid [16]byte

type pair struct {
	A int32
	B string
}

// allTypes has a field of every supported kind.
type allTypes struct {
	Bool    bool
	I32     int32
	U32     uint32
	I64     int64
	U64     uint64
	State   state
	Str     string `xdr:"max=64"`
	Bytes   []byte `xdr:"max=64"`
	Blob    blob
	UUID    uuid
	Fixed   [3]int32
	Chars   []byte `xdr:"char,max=64"`
	Ints    []int32
	Strs    []string `xdr:"max=8"`
	Pairs   []pair
	Nested  pair
	Opt     *pair
	OptNil  *pair
	OptStr  *string `xdr:"max=16"`
	PtrPtr  **int32
	Params  []typedParam `xdr:"max=16"`
	Matrix  [2][2]uint32
	Nested2 [][]string
	Skipped int `xdr:"-"`
	hidden  int
}

// node is a self-referential list, the classic stack-exhaustion vector.
type node struct {
	Val  int32
	Next *node
}

// tree recurses through a variable-length array instead of a pointer.
type tree struct {
	Kids []tree
}
