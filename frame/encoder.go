package frame

import "fmt"

// Encoder builds whole messages (length word, header, payload) for a
// connection, each in one buffer sized exactly, after checking it against
// the connection's limit: it is the one place where messages are laid out
// and sized, for a writer that queues messages (package rpc) as for one
// that writes them at once (Writer). The zero value uses MaxMessage.
type Encoder struct {
	// Max bounds a message without its length word (header plus payload);
	// zero or less means MaxMessage.
	Max int
}

func (e Encoder) limit() int {
	if e.Max <= 0 {
		return MaxMessage
	}
	return e.Max
}

// Check returns an error wrapping ErrFrameTooLarge if a payload of n bytes
// does not fit in one message.
func (e Encoder) Check(n int) error {
	if max := e.limit(); n > max-HeaderSize {
		return fmt.Errorf("virtrpc: %w: message of %d bytes, limit %d", ErrFrameTooLarge, HeaderSize+n, max)
	}
	return nil
}

// Message returns the message with header h and payload.
func (e Encoder) Message(h Header, payload []byte) ([]byte, error) {
	return e.Append(nil, h, payload)
}

// Append appends the message with header h and payload to dst.
func (e Encoder) Append(dst []byte, h Header, payload []byte) ([]byte, error) {
	if err := e.Check(len(payload)); err != nil {
		return dst, err
	}
	if dst == nil {
		dst = make([]byte, 0, Overhead+len(payload))
	}
	return Append(dst, h, payload), nil
}

// Reply returns the OK reply to the call with header call.
func (e Encoder) Reply(call Header, payload []byte) ([]byte, error) {
	call.Type, call.Status = TypeReply, StatusOK
	return e.Message(call, payload)
}

// ErrorReply returns the error reply to the call with header call. An error
// whose payload does not fit in a message is replaced by one saying so, so
// the caller always gets an answer.
func (e Encoder) ErrorReply(call Header, err *Error) []byte {
	call.Type, call.Status = TypeReply, StatusError
	p := EncodeError(err)
	if e.Check(len(p)) != nil {
		p = EncodeError(NewError(CodeInternalError, "error reply of %d bytes over the message limit", len(p)))
	}
	return Append(make([]byte, 0, Overhead+len(p)), call, p)
}

// Headroom puts the header of a message whose payload is already in
// msg[Overhead:] into msg[:Overhead], so a large payload is sent without a
// copy (stream data: one write per frame, no allocation per frame).
func (e Encoder) Headroom(h Header, msg []byte) error {
	if len(msg) < Overhead {
		return fmt.Errorf("virtrpc: message buffer of %d bytes has no room for the %d-byte header", len(msg), Overhead)
	}
	if err := e.Check(len(msg) - Overhead); err != nil {
		return err
	}
	PutHeader(msg, h, len(msg)-Overhead)
	return nil
}

// KeepaliveSize is the size of a keepalive message (it has no payload).
const KeepaliveSize = Overhead

// PutKeepalive writes a keepalive PING or PONG (proc) into b[:KeepaliveSize].
func PutKeepalive(b []byte, proc int32) {
	PutHeader(b, Header{Prog: KeepaliveProgram, Vers: KeepaliveVersion, Proc: proc, Type: TypeMessage}, 0)
}
