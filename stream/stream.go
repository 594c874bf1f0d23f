// Package stream is the bulk data stream of a virtrpc connection: a sender
// side (io.Writer, io.ReaderFrom, holes, Close that returns the receiver's
// verdict), a receiver side (io.Reader, io.WriterTo that keeps holes when
// the destination can seek), per-stream credit flow control, and duplex
// streams that carry data both ways at once and can serve as a net.Conn.
//
// A Stream is opened by a call (rpc.Conn.OpenStream on the calling side,
// rpc.Request.Stream on the serving side), and both sides declare its
// direction, from the caller's point of view: Upload (the caller sends),
// Download (the caller receives), or Duplex (both, as libvirt's console
// streams). Data the peer sends against the declared direction is a
// protocol error that closes the connection; it is never buffered, so a
// side that only sends holds no receive buffer. Streams follow libvirt's
// finish, abort and EOF rules exactly when the connection runs in compat
// mode.
//
// Close ends the stream and reports its outcome. The sending side's Close
// tells the receiver that all data was sent and returns the receiver's
// verdict: nil once everything was consumed (in native mode the verdict
// carries the count), or the receiver's error. The receiving side's Close
// acknowledges the end after io.EOF; before the end it aborts the stream
// toward the sender and returns ErrReceiverClosed (the sender's Write and
// Close get it too). A duplex stream's Close does both. CloseWrite finishes
// only the direction this side sends on and keeps reading (half-close).
//
// One goroutine may read and one may write a Stream at the same time; Close
// and CloseWithError may be called from any goroutine. Read and Write take
// no context: deadlines (SetReadDeadline, SetWriteDeadline) bound them,
// whatever the peer does. CloseWithError aborts a transfer, for example
// from a context with context.AfterFunc(ctx, func() { st.CloseWithError(ctx.Err()) }),
// and wakes a Read or a Write waiting for data or credit (see Write for one
// blocked in the socket). WriteHole and Finish take a context and return
// when it ends.
//
// Abort reasons travel as libvirt error payloads. ErrReceiverClosed,
// ErrPeerFinished, ErrIncomplete and rpc.ErrStreamAbandoned carry a virtrpc
// code (see package frame), so errors.Is matches them on both ends; any
// other reason arrives as a *frame.Error (errors.As), which also matches
// ErrAborted when it is a plain abort.
package stream

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/internal/streamcore"
)

// Errors a Stream returns.
var (
	// ErrAborted: the peer aborted the stream without saying why
	// (libvirt's clients abort with an empty error).
	ErrAborted = streamcore.ErrAborted
	// ErrClosed: the stream was closed locally. It matches net.ErrClosed.
	ErrClosed = streamcore.ErrClosed
	// ErrNotSparse: a hole on a stream not opened as sparse.
	ErrNotSparse = streamcore.ErrNotSparse
	// ErrReceiverClosed: the receiver closed the stream before its end. The
	// receiver's Close returns it, and the sender's Write and Close get it.
	ErrReceiverClosed = streamcore.ErrReceiverClosed
	// ErrIncomplete: the receiver's verdict counts fewer bytes consumed than
	// were sent (native mode).
	ErrIncomplete = streamcore.ErrIncomplete
	// ErrPeerFinished: the peer finished the stream without reading the
	// data sent to it.
	ErrPeerFinished = streamcore.ErrPeerFinished
	// ErrDirection: a read on a side that only sends, or a write on a side
	// that only receives.
	ErrDirection = streamcore.ErrDirection
	// ErrOutcomeUnknown: Finish's ctx ended after the finish was sent and
	// before the peer's verdict: the receiver may have read everything and
	// acknowledged before the abort that followed reached it, or not. It
	// wraps ctx's error.
	ErrOutcomeUnknown = streamcore.ErrOutcomeUnknown
)

// Direction is which way a stream's data goes, from the point of view of
// the side that opened it with a call. Both sides declare the same value.
type Direction int

const (
	// Upload: the caller sends, the serving side receives.
	Upload Direction = iota + 1
	// Download: the serving side sends, the caller receives.
	Download
	// Duplex: data goes both ways at once, each way with its own credit
	// in native mode (libvirt's console streams are duplex).
	Duplex
)

func (d Direction) String() string {
	switch d {
	case Upload:
		return "upload"
	case Download:
		return "download"
	case Duplex:
		return "duplex"
	}
	return fmt.Sprintf("Direction(%d)", int(d))
}

// Options are what a user chooses when opening a stream. A nil *Options
// means the zero value.
type Options struct {
	// Sparse allows holes (STREAM_HOLE frames), as libvirt's
	// VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM flag does.
	Sparse bool
}

// Stream is one data stream. See the package documentation.
type Stream struct {
	c *streamcore.Stream
}

func init() {
	streamcore.Wrap = func(c *streamcore.Stream) any { return &Stream{c: c} }
}

// Header returns the (prog, vers, proc, serial) of the call that opened the
// stream, with type STREAM.
func (s *Stream) Header() frame.Header { return s.c.Header() }

// Sparse reports whether the stream carries holes.
func (s *Stream) Sparse() bool { return s.c.Sparse() }

// CanWrite reports whether this side sends data.
func (s *Stream) CanWrite() bool { return s.c.Sends() }

// CanRead reports whether this side receives data.
func (s *Stream) CanRead() bool { return s.c.Receives() }

// BytesSent is the number of data bytes handed to the connection so far.
func (s *Stream) BytesSent() int64 { return s.c.BytesSent() }

// BytesReceived is the number of data bytes received so far (holes not
// counted).
func (s *Stream) BytesReceived() int64 { return s.c.BytesReceived() }

// Buffered is the number of received data bytes not yet read.
func (s *Stream) Buffered() int { return s.c.Buffered() }

// MaxBuffered is the most data the stream ever held unread. In native mode
// it never exceeds BufferLimit.
func (s *Stream) MaxBuffered() int { return s.c.MaxBuffered() }

// BufferLimit bounds the bytes in flight plus buffered unread (native
// mode): a paused reader never holds more.
func (s *Stream) BufferLimit() int64 { return s.c.BufferLimit() }

// Window is the current receive window (native mode).
func (s *Stream) Window() int64 { return s.c.Window() }

// Write sends p as stream data. It returns once p is queued; flow control
// blocks it while the receiver is behind. A zero-length Write sends nothing.
// Without a write deadline, Write may write the socket itself when the
// connection is idle (bulk data then costs no goroutine hand-off); toward a
// peer that stops reading it then returns only when the connection fails
// (keepalive reaps a silent peer). With a deadline set it never writes the
// socket itself and returns os.ErrDeadlineExceeded once the deadline
// passes.
func (s *Stream) Write(p []byte) (int, error) { return s.c.Write(p) }

// ReadFrom sends everything r yields until io.EOF, reading straight into
// frame buffers; what each Read returns is sent at once, so a socket's
// request is not held back waiting for a full frame. On a sparse stream whose source is a file, the file's holes
// are sent as holes (found with SEEK_DATA/SEEK_HOLE) and never read.
// It does not finish the stream: call Close for that.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) { return s.c.ReadFrom(r) }

// WriteHole sends a hole of n bytes: the receiver reads it as n zero bytes,
// or skips over it in a destination that can seek. The stream must be
// sparse. It returns when ctx ends if the hole cannot be queued before.
func (s *Stream) WriteHole(ctx context.Context, n int64) error { return s.c.WriteHole(ctx, n) }

// Read reads stream data; holes read as zeros. It returns io.EOF after the
// sender finished, or the peer's error if it aborted.
func (s *Stream) Read(p []byte) (int, error) { return s.c.Read(p) }

// WriteTo writes the stream's data to w until the sender finishes. Holes are
// skipped with Seek when w is an io.Seeker (a trailing hole extends w with
// Truncate when w has it, else with one written zero byte), and written as
// zeros otherwise. If w fails, the stream is aborted with w's error, which
// the sender's Close returns.
func (s *Stream) WriteTo(w io.Writer) (int64, error) { return s.c.WriteTo(w) }

// Close finishes the stream and returns its outcome; see the package
// documentation. It is Finish without a deadline.
func (s *Stream) Close() error { return s.c.Close() }

// Finish is Close with a context bounding the wait for the peer's verdict.
// If ctx ends first, the stream is aborted. While the finish was still
// queued (behind data, toward a peer that reads slowly) it is dropped and
// the abort goes instead: the receiver sees the abort, and Finish returns
// ctx's error. Once the finish was sent, the receiver may read it and
// acknowledge before the abort arrives: Finish then returns an error that
// matches both ErrOutcomeUnknown and ctx's error (errors.Is), and the
// transfer may or may not have succeeded at the other end.
func (s *Stream) Finish(ctx context.Context) error { return s.c.Finish(ctx) }

// CloseWrite finishes the direction this side sends on without waiting for
// the verdict, and keeps reading; Close later returns the verdict. In
// compat mode a client's CloseWrite finishes the whole stream for a
// libvirt server (libvirt has no half-close for clients).
func (s *Stream) CloseWrite() error { return s.c.CloseWrite() }

// CloseWithError aborts the stream: queued data is dropped and the peer is
// told err (as a *frame.Error it can inspect; in compat mode a libvirt
// client's abort carries no error, as libvirt's does). Local reads and
// writes then fail. It returns nil, or the peer's error if it had already
// failed. A nil err aborts without a reason.
func (s *Stream) CloseWithError(err error) error { return s.c.CloseWithError(err) }

// SetReadDeadline bounds Read and WriteTo: once t passes they return
// os.ErrDeadlineExceeded (the stream stays usable). A zero t means none.
func (s *Stream) SetReadDeadline(t time.Time) error {
	s.c.SetReadDeadline(t)
	return nil
}

// SetWriteDeadline bounds Write, ReadFrom and WriteHole likewise.
func (s *Stream) SetWriteDeadline(t time.Time) error {
	s.c.SetWriteDeadline(t)
	return nil
}

// SetDeadline sets both deadlines.
func (s *Stream) SetDeadline(t time.Time) error {
	s.c.SetReadDeadline(t)
	s.c.SetWriteDeadline(t)
	return nil
}
