package frame

import (
	"fmt"

	"github.com/virtrpc/virtrpc/frame/xdr"
)

// libvirt error codes and domains that this library produces itself. The
// numbers are libvirt's (virerror.h) so a libvirt peer reports them sensibly.
const (
	CodeInternalError    = 1
	CodeNoSupport        = 3
	CodeOperationFailed  = 9
	CodeOperationDenied  = 29
	CodeRPC              = 39
	CodeAuthFailed       = 45
	CodeOperationAborted = 78

	DomainRPC    = 7
	DomainStream = 54 // VIR_FROM_STREAMS

	LevelError = 2
)

// maxErrorString bounds each string of an error payload on decode, like
// libvirt's VIR_NET_MESSAGE_STRING_MAX.
const maxErrorString = 4 << 20

// NamedUUID is the optional domain or network an error refers to.
type NamedUUID struct {
	Name string
	UUID [16]byte
	ID   int32 // domains only
}

// Error is libvirt's error payload (virNetMessageError), carried by a REPLY
// or STREAM frame with status ERROR. It is the error type a call or stream
// returns when the peer reported a failure: use errors.As to get at it.
type Error struct {
	Code    int32
	Domain  int32
	Message *string
	Level   int32
	Dom     *NamedUUID
	Str1    *string
	Str2    *string
	Str3    *string
	Int1    int32
	Int2    int32
	Net     *NamedUUID
}

// NewError returns an Error with the given code and message, at error level,
// in the RPC domain, with int1 and int2 unset (-1) as libvirt leaves them.
func NewError(code int32, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Code: code, Domain: DomainRPC, Message: &msg, Level: LevelError, Str1: &msg, Int1: -1, Int2: -1}
}

func (e *Error) Error() string {
	msg := "<no message>"
	if e.Message != nil {
		msg = *e.Message
	}
	return fmt.Sprintf("remote error: %s (code %d, domain %d)", msg, e.Code, e.Domain)
}

// Text returns the message, or "" when the peer sent none.
func (e *Error) Text() string {
	if e.Message == nil {
		return ""
	}
	return *e.Message
}

// MarshalXDR appends the libvirt error payload.
func (e *Error) MarshalXDR(enc *xdr.Encoder) error {
	enc.Int32(e.Code)
	enc.Int32(e.Domain)
	enc.OptionalString(e.Message)
	enc.Int32(e.Level)
	putNamed(enc, e.Dom, true)
	enc.OptionalString(e.Str1)
	enc.OptionalString(e.Str2)
	enc.OptionalString(e.Str3)
	enc.Int32(e.Int1)
	enc.Int32(e.Int2)
	putNamed(enc, e.Net, false)
	return nil
}

func putNamed(enc *xdr.Encoder, n *NamedUUID, withID bool) {
	enc.Bool(n != nil)
	if n == nil {
		return
	}
	enc.String(n.Name)
	enc.FixedOpaque(n.UUID[:])
	if withID {
		enc.Int32(n.ID)
	}
}

// UnmarshalXDR reads the libvirt error payload.
func (e *Error) UnmarshalXDR(d *xdr.Decoder) error {
	var err error
	step := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	step(func() (err error) { e.Code, err = d.Int32(); return })
	step(func() (err error) { e.Domain, err = d.Int32(); return })
	step(func() (err error) { e.Message, err = d.OptionalString(maxErrorString); return })
	step(func() (err error) { e.Level, err = d.Int32(); return })
	step(func() (err error) { e.Dom, err = getNamed(d, true); return })
	step(func() (err error) { e.Str1, err = d.OptionalString(maxErrorString); return })
	step(func() (err error) { e.Str2, err = d.OptionalString(maxErrorString); return })
	step(func() (err error) { e.Str3, err = d.OptionalString(maxErrorString); return })
	step(func() (err error) { e.Int1, err = d.Int32(); return })
	step(func() (err error) { e.Int2, err = d.Int32(); return })
	step(func() (err error) { e.Net, err = getNamed(d, false); return })
	return err
}

func getNamed(d *xdr.Decoder, withID bool) (*NamedUUID, error) {
	present, err := d.Bool()
	if err != nil || !present {
		return nil, err
	}
	var n NamedUUID
	if n.Name, err = d.String(maxErrorString); err != nil {
		return nil, err
	}
	uuid, err := d.FixedOpaque(16)
	if err != nil {
		return nil, err
	}
	copy(n.UUID[:], uuid)
	if withID {
		if n.ID, err = d.Int32(); err != nil {
			return nil, err
		}
	}
	return &n, nil
}

// EncodeError returns the XDR payload of e.
func EncodeError(e *Error) []byte {
	enc := xdr.NewEncoder(make([]byte, 0, 64))
	_ = e.MarshalXDR(enc)
	return enc.Bytes()
}

// DecodeError parses an error payload. Trailing bytes are an error.
func DecodeError(payload []byte) (*Error, error) {
	d := xdr.NewDecoder(payload)
	e := new(Error)
	if err := e.UnmarshalXDR(d); err != nil {
		return nil, fmt.Errorf("virtrpc: bad error payload: %w", err)
	}
	if err := d.Done(); err != nil {
		return nil, fmt.Errorf("virtrpc: bad error payload: %w", err)
	}
	return e, nil
}
