package sasl

import (
	"errors"
	"fmt"
)

// ErrAuthFailed is matched by every authentication failure, whatever its
// reason; the sentinels below say which reason it was, when known.
var ErrAuthFailed = errors.New("sasl: authentication failed")

// Reasons for a failure, each matched with errors.Is.
var (
	ErrWrongPassword       = errors.New("wrong password")
	ErrUnknownUser         = errors.New("unknown user")
	ErrMechanismNotOffered = errors.New("mechanism not offered")
	ErrChannelBinding      = errors.New("channel bindings do not match")
	ErrTooManyAttempts     = errors.New("too many failed attempts")
	ErrInsecureTransport   = errors.New("mechanism refused on an unprotected transport")
	ErrNotAllowed          = errors.New("identity not allowed")
	ErrMalformed           = errors.New("malformed SASL message")
	ErrServerNotVerified   = errors.New("the server did not prove it knows the credentials")
	ErrSecurityLayer       = errors.New("SASL security layers are not supported on this connection")
)

// Reason names why an authentication failed. Its String is what a virtrpc
// server puts in str2 of its libvirt error reply, so a virtrpc client can
// tell the reason apart; libvirt clients only see the message.
type Reason int

// Reasons.
const (
	ReasonUnknown Reason = iota
	ReasonWrongPassword
	ReasonUnknownUser
	ReasonMechanismNotOffered
	ReasonChannelBinding
	ReasonTooManyAttempts
	ReasonInsecureTransport
	ReasonNotAllowed
	ReasonMalformed
	ReasonServerNotVerified
	ReasonSecurityLayer
)

var reasons = []struct {
	name string
	err  error
}{
	ReasonUnknown:             {"unknown", nil},
	ReasonWrongPassword:       {"wrong-password", ErrWrongPassword},
	ReasonUnknownUser:         {"unknown-user", ErrUnknownUser},
	ReasonMechanismNotOffered: {"mechanism-not-offered", ErrMechanismNotOffered},
	ReasonChannelBinding:      {"channel-binding", ErrChannelBinding},
	ReasonTooManyAttempts:     {"too-many-attempts", ErrTooManyAttempts},
	ReasonInsecureTransport:   {"insecure-transport", ErrInsecureTransport},
	ReasonNotAllowed:          {"not-allowed", ErrNotAllowed},
	ReasonMalformed:           {"malformed", ErrMalformed},
	ReasonServerNotVerified:   {"server-not-verified", ErrServerNotVerified},
	ReasonSecurityLayer:       {"security-layer", ErrSecurityLayer},
}

func (r Reason) String() string {
	if r < 0 || int(r) >= len(reasons) {
		return fmt.Sprintf("reason(%d)", int(r))
	}
	return reasons[r].name
}

// reasonNamed is the inverse of String; ReasonUnknown if none matches.
func reasonNamed(s string) Reason {
	for i, r := range reasons {
		if r.name == s {
			return Reason(i)
		}
	}
	return ReasonUnknown
}

// Error is an authentication failure. It matches ErrAuthFailed, its
// reason's sentinel and its cause with errors.Is (and errors.As reaches a
// remote *rpc.Error through it).
type Error struct {
	Reason    Reason
	Mechanism string // the mechanism that failed, if one was chosen
	Err       error  // the cause: a detail, or the peer's error reply
}

func (e *Error) Error() string {
	msg := "sasl: authentication failed"
	if e.Mechanism != "" {
		msg += " (" + e.Mechanism + ")"
	}
	if r := e.Reason; r != ReasonUnknown && int(r) < len(reasons) {
		msg += ": " + reasons[r].err.Error()
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns ErrAuthFailed, the reason's sentinel and the cause.
func (e *Error) Unwrap() []error {
	errs := []error{ErrAuthFailed}
	if r := e.Reason; r > 0 && int(r) < len(reasons) {
		errs = append(errs, reasons[r].err)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// fail builds an *Error.
func fail(r Reason, mech string, format string, args ...any) *Error {
	var err error
	if format != "" {
		err = fmt.Errorf(format, args...)
	}
	return &Error{Reason: r, Mechanism: mech, Err: err}
}
