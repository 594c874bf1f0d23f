package xdr

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Sentinel errors. Decode failures arrive wrapped in a *DecodeError, so test
// for them with errors.Is.
var (
	// ErrShort means the input ended before the value did, including a length
	// or count that claims more bytes than remain.
	ErrShort = errors.New("xdr: short input")
	// ErrTooLong means a length or count exceeds the limit set by the caller
	// or by an `xdr:"max=N"` tag.
	ErrTooLong = errors.New("xdr: length over limit")
	// ErrBadBool means a bool word was neither 0 nor 1.
	ErrBadBool = errors.New("xdr: invalid bool")
	// ErrTrailing means bytes were left over after a complete value.
	ErrTrailing = errors.New("xdr: trailing bytes")
	// ErrTooDeep means optionals, variable-length arrays or custom
	// marshalers were nested more than 64 levels deep.
	ErrTooDeep = errors.New("xdr: nesting too deep")

	errNegative = errors.New("xdr: negative fixed opaque length")
)

// DecodeError reports where in a value decoding failed and why.
type DecodeError struct {
	// Field is the path to the failing field, such as "Dom.Name" or
	// "Params[2].Value"; empty for a top-level value or a bare Decoder call.
	Field string
	// Err is what went wrong; it wraps one of the sentinel errors above or
	// comes from an UnmarshalXDR method.
	Err error
}

func (e *DecodeError) Error() string {
	msg := "decode error"
	if e.Err != nil {
		msg = strings.TrimPrefix(e.Err.Error(), "xdr: ")
	}
	if e.Field == "" {
		return "xdr: " + msg
	}
	return "xdr: " + e.Field + ": " + msg
}

func (e *DecodeError) Unwrap() error { return e.Err }

// decodeErr builds the error returned by Decoder methods; the caller's
// sentinel stays reachable through errors.Is.
func decodeErr(sentinel error, format string, args ...any) error {
	return &DecodeError{Err: fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)}
}

// encodeError carries a field path for Marshal failures. It is unexported
// because callers only need the message and the wrapped sentinel.
type encodeError struct {
	field string
	err   error
}

func (e *encodeError) Error() string {
	msg := strings.TrimPrefix(e.err.Error(), "xdr: ")
	if e.field == "" {
		return "xdr: encoding: " + msg
	}
	return "xdr: encoding " + e.field + ": " + msg
}

func (e *encodeError) Unwrap() error { return e.err }

// decodeIn prefixes a decode error's field path with prefix (a field name or
// an "[i]" index), building a new error so shared errors are never mutated.
func decodeIn(err error, prefix string) error {
	if de, ok := err.(*DecodeError); ok {
		return &DecodeError{Field: joinPath(prefix, de.Field), Err: de.Err}
	}
	return &DecodeError{Field: prefix, Err: err}
}

// encodeIn is decodeIn for Marshal errors.
func encodeIn(err error, prefix string) error {
	if ee, ok := err.(*encodeError); ok {
		return &encodeError{field: joinPath(prefix, ee.field), err: ee.err}
	}
	return &encodeError{field: prefix, err: err}
}

func joinPath(prefix, inner string) string {
	switch {
	case prefix == "":
		return inner
	case inner == "":
		return prefix
	case inner[0] == '[':
		return prefix + inner
	default:
		return prefix + "." + inner
	}
}

func indexPath(i int) string { return "[" + strconv.Itoa(i) + "]" }
