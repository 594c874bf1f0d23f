package migrate

import (
	"errors"
	"fmt"

	"github.com/virtrpc/virtrpc/frame"
)

// Phase is a phase of libvirt's v3 migration protocol.
type Phase int32

const (
	// Begin runs on the source: it describes the migration (cookie, streams).
	Begin Phase = iota + 1
	// Prepare runs on the destination: it gets ready, returns a cookie and
	// opens the tunnel streams.
	Prepare
	// Perform runs on both: the source pumps its data into the streams and
	// the destination feeds what arrives to its writers.
	Perform
	// Finish runs on the destination once the streams ended or failed: it
	// takes the guest over, or cleans up, and returns a cookie.
	Finish
	// Confirm runs on the source: it learns the outcome.
	Confirm
)

var phaseNames = [...]string{Begin: "begin", Prepare: "prepare", Perform: "perform", Finish: "finish", Confirm: "confirm"}

func (p Phase) String() string {
	if p >= Begin && p <= Confirm {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", int32(p))
}

// Side is the host a failure happened on.
type Side int32

const (
	// Source is the host the guest migrates from.
	Source Side = iota + 1
	// Destination is the host the guest migrates to.
	Destination
)

func (s Side) String() string {
	switch s {
	case Source:
		return "source"
	case Destination:
		return "destination"
	}
	return fmt.Sprintf("side(%d)", int32(s))
}

// Error is how every migration failure is reported, on both sides: which
// phase failed, on which side, and why. A failure of the peer arrives with
// the peer's Phase and Side and its reason as text (when a reply or a
// stream abort carried it, Err also matches that *frame.Error with
// errors.As; a source's ABORT or CONFIRM carries none). The peer's error
// values do not cross the wire: errors.Is(err, context.Canceled) holds only
// on the side that was cancelled. Use errors.As(err, &*Error).
type Error struct {
	Phase Phase
	Side  Side
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("migration failed in %s on the %s: %v", e.Phase, e.Side, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// wireMark in Int1 of libvirt's error payload tells a migration failure
// from other errors; Str1 and Str2 then name the phase and the side, Str3
// holds the reason.
const wireMark = int32(migrateProg)

// wire encodes e as libvirt's error payload, for a reply or a stream abort.
func (e *Error) wire() *frame.Error {
	fe := frame.NewError(frame.CodeOperationFailed, "%s", e.Error())
	phase, side, reason := e.Phase.String(), e.Side.String(), fmt.Sprint(e.Err)
	fe.Str1, fe.Str2, fe.Str3 = &phase, &side, &reason
	fe.Int1 = wireMark
	return fe
}

// remoteReason is the peer's reason for a failure, as the text it sent.
type remoteReason struct {
	text string
	fe   *frame.Error
}

func (r *remoteReason) Error() string { return r.text }
func (r *remoteReason) Unwrap() error {
	if r.fe == nil {
		return nil
	}
	return r.fe
}

// fromWire recovers a migration Error from an error a call or a stream
// returned. ok is false when err carries none.
func fromWire(err error) (*Error, bool) {
	var fe *frame.Error
	if !errors.As(err, &fe) || fe.Int1 != wireMark || fe.Str1 == nil || fe.Str2 == nil || fe.Str3 == nil {
		return nil, false
	}
	e := &Error{Err: &remoteReason{text: *fe.Str3, fe: fe}}
	for p := Begin; p <= Confirm; p++ {
		if p.String() == *fe.Str1 {
			e.Phase = p
		}
	}
	switch *fe.Str2 {
	case "source":
		e.Side = Source
	case "destination":
		e.Side = Destination
	}
	if e.Phase == 0 || e.Side == 0 {
		return nil, false
	}
	return e, true
}

// classify turns err, seen on side during phase, into an *Error: a peer's
// migration failure keeps the peer's phase and side; a *frame.Error from the
// peer that is not one (a stream abort by the library, an rpc failure) is
// the peer's failure in this phase; anything else is this side's.
func classify(phase Phase, side Side, err error) *Error {
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	if me, ok := fromWire(err); ok {
		return me
	}
	var fe *frame.Error
	if errors.As(err, &fe) {
		return &Error{Phase: phase, Side: other(side), Err: err}
	}
	return &Error{Phase: phase, Side: side, Err: err}
}

func other(s Side) Side {
	if s == Source {
		return Destination
	}
	return Source
}
