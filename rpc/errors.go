package rpc

import (
	"errors"
	"fmt"
	"net"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/internal/streamcore"
)

// Error is the typed error a call returns when the peer's handler failed:
// libvirt's error payload. Use errors.As(err, &*rpc.Error).
type Error = frame.Error

// ProtocolError is a wire-protocol violation by the peer.
type ProtocolError = frame.ProtocolError

var (
	// ErrKeepaliveTimeout: the peer stopped answering keepalive pings.
	ErrKeepaliveTimeout = errors.New("virtrpc: keepalive timeout: peer stopped answering")
	// ErrNativeRefused: the peer does not speak virtrpc's native protocol
	// and the options require it.
	ErrNativeRefused = errors.New("virtrpc: peer refused native mode")
	// ErrCompatMode: the operation needs native mode, and the connection
	// runs in libvirt compat mode.
	ErrCompatMode = errors.New("virtrpc: not available in libvirt compat mode")
	// ErrStreamAbandoned is what the peer's side of a stream gets when the
	// OpenStream that opened it returned early because its ctx ended.
	// It travels as a code, so errors.Is matches it on the peer's side in
	// native mode; in compat mode a client's abort carries no reason (as
	// libvirt's), and the peer sees stream.ErrAborted.
	ErrStreamAbandoned = streamcore.ErrAbandoned
	// ErrSlowPeer: the peer sent a message slower than Options.MinMessageRate
	// allows, or stopped in the middle of one.
	ErrSlowPeer = errors.New("virtrpc: peer too slow sending a message")
	// ErrPeerClosed: the peer closed the connection.
	ErrPeerClosed = errors.New("virtrpc: peer closed the connection")
	// errLocalClose is the cause recorded by Close.
	errLocalClose = errors.New("closed by Close")
)

// ClosedError is what every waiter gets once a connection is closed: it
// says why, and matches both net.ErrClosed and the cause with errors.Is.
type ClosedError struct{ Cause error }

func (e *ClosedError) Error() string {
	return fmt.Sprintf("virtrpc: connection closed: %v", e.Cause)
}

// Unwrap returns net.ErrClosed and the cause.
func (e *ClosedError) Unwrap() []error { return []error{net.ErrClosed, e.Cause} }

// rpcError builds the error reply a libvirt peer understands.
func rpcError(code int32, format string, args ...any) *frame.Error {
	return frame.NewError(code, format, args...)
}

// NewError returns an *Error with libvirt's code, in the RPC domain, for a
// handler to return.
func NewError(code int32, format string, args ...any) *Error {
	return frame.NewError(code, format, args...)
}
