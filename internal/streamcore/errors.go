package streamcore

import (
	"errors"
	"fmt"
	"net"

	"github.com/virtrpc/virtrpc/frame"
)

// The errors package stream exports (it re-declares these values).
var (
	ErrAborted        = errors.New("virtrpc: stream aborted by peer")
	ErrClosed         = fmt.Errorf("virtrpc: stream closed: %w", net.ErrClosed)
	ErrNotSparse      = errors.New("virtrpc: stream is not sparse")
	ErrReceiverClosed = errors.New("virtrpc: receiver closed the stream before its end")
	ErrIncomplete     = errors.New("virtrpc: stream incomplete")
	ErrPeerFinished   = errors.New("virtrpc: the peer finished the stream without reading the data sent to it")
	ErrDirection      = errors.New("virtrpc: not allowed by the stream's declared direction")
	// ErrAbandoned is rpc.ErrStreamAbandoned.
	ErrAbandoned = errors.New("virtrpc: the caller gave up on the call that opened the stream")
	// ErrEarlyData: data for the stream arrived before it was opened.
	ErrEarlyData = errors.New("virtrpc: stream data arrived before the stream was opened")
	// ErrOutcomeUnknown: Finish's ctx ended after our finish was written,
	// before the peer's verdict came: the receiver may have read everything
	// and acknowledged, or not (see Finish).
	ErrOutcomeUnknown = errors.New("virtrpc: the stream's outcome is unknown: its finish was sent, the peer's verdict did not come in time")

	// errLocalAbort is the reason of CloseWithError(nil).
	errLocalAbort = errors.New("virtrpc: stream aborted")
)

// coded are the sentinels with a virtrpc code on the wire.
var coded = [...]struct {
	code int32
	err  error
}{
	{frame.CodeStreamAbandoned, ErrAbandoned},
	{frame.CodeReceiverClosed, ErrReceiverClosed},
	{frame.CodePeerFinished, ErrPeerFinished},
	{frame.CodeStreamIncomplete, ErrIncomplete},
	{frame.CodeEarlyStreamData, ErrEarlyData},
}

// encodeAbort is the error payload of an abort: err itself if it is a
// *frame.Error, a virtrpc code if it is one of the coded sentinels, else an
// operation-aborted error in the stream domain.
func encodeAbort(err error) []byte {
	var fe *frame.Error
	if errors.As(err, &fe) {
		return frame.EncodeError(fe)
	}
	fe = frame.NewError(frame.CodeOperationAborted, "%s", err.Error())
	fe.Domain = frame.DomainStream
	for _, c := range coded {
		if errors.Is(err, c.err) {
			fe.Code, fe.Domain = c.code, frame.DomainVirtrpc
			break
		}
	}
	return frame.EncodeError(fe)
}

// decodeAbort is the error a peer's STREAM/ERROR payload stands for: a
// *frame.Error (errors.As), which also matches the sentinel of its code
// (errors.Is), and ErrAborted for an abort without a reason.
func decodeAbort(payload []byte) error {
	if len(payload) == 0 {
		return ErrAborted // libvirt's clients abort with an empty error
	}
	fe, err := frame.DecodeError(payload)
	if err != nil {
		return fmt.Errorf("%w (undecodable error payload: %v)", ErrAborted, err)
	}
	if fe.Domain == frame.DomainVirtrpc {
		for _, c := range coded {
			if fe.Code == c.code {
				return &codedError{fe, c.err}
			}
		}
	}
	if fe.Domain == frame.DomainStream && fe.Code == frame.CodeOperationAborted {
		return &codedError{fe, ErrAborted}
	}
	return fe
}

// codedError is a peer's error that stands for one of our sentinels.
type codedError struct {
	fe       *frame.Error
	sentinel error
}

func (e *codedError) Error() string   { return e.fe.Error() }
func (e *codedError) Unwrap() []error { return []error{e.fe, e.sentinel} }

// abortError is what local operations return once we aborted the stream.
type abortError struct{ err error }

func (e *abortError) Error() string {
	if e.err == errLocalAbort {
		return "virtrpc: stream aborted locally"
	}
	return "virtrpc: stream aborted: " + e.err.Error()
}
func (e *abortError) Unwrap() error { return e.err }
