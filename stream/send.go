package stream

import (
	"context"
	"errors"
	"io"

	"github.com/virtrpc/virtrpc/frame"
)

// maxQueued is how many data frames a stream may have waiting for the write
// scheduler: one being filled while one is written keeps the pipe full, and
// more would only add latency and memory.
const maxQueued = 2

// minSendCredit: with less credit than this (and more data to send) the
// sender waits for a grant instead of sending slivers. Receivers grant at
// half a window, and windows are far larger, so a grant always comes.
const minSendCredit = 16 << 10

type outFrame struct {
	buf *[]byte // pooled, or nil
	msg []byte  // the whole message: length word, header, payload
}

// PopFrame hands the write scheduler the stream's next message. more says
// whether another one is ready (the scheduler then keeps the stream in its
// round-robin); done must be called with the frame once it is written.
func (s *Stream) PopFrame() (f Frame, more bool) {
	s.mu.Lock()
	if len(s.outq) == 0 || s.held {
		s.scheduled = false
		s.mu.Unlock()
		return Frame{}, false
	}
	of := s.outq[0]
	copy(s.outq, s.outq[1:])
	s.outq[len(s.outq)-1] = outFrame{}
	s.outq = s.outq[:len(s.outq)-1]
	more = len(s.outq) > 0
	s.scheduled = more
	s.sendCond.Broadcast()
	s.mu.Unlock()
	return Frame{of: of}, more
}

// Frame is one message popped from a stream for the scheduler.
type Frame struct{ of outFrame }

// Bytes is the whole message to write.
func (f Frame) Bytes() []byte { return f.of.msg }

// Done returns the frame's buffer; call it once the message is written.
func (f Frame) Done() { putBuf(f.of.buf) }

// reserve waits until the stream may queue a data frame and takes up to
// want bytes of credit.
func (s *Stream) reserve(want int) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	want = min(want, s.cfg.ChunkSize)
	for {
		if err := s.sendErrLocked(); err != nil {
			return 0, err
		}
		if len(s.outq) < maxQueued {
			if s.cfg.Role != Native {
				return want, nil
			}
			if s.credit >= int64(min(want, minSendCredit)) {
				n := int(min(int64(want), s.credit))
				s.credit -= int64(n)
				return n, nil
			}
		}
		s.sendCond.Wait()
	}
}

// refund gives back credit reserved but not used.
func (s *Stream) refund(n int) {
	if n <= 0 || s.cfg.Role != Native {
		return
	}
	s.mu.Lock()
	s.credit += int64(n)
	s.mu.Unlock()
}

func (s *Stream) sendErrLocked() error {
	switch {
	case s.lerr != nil:
		return s.lerr
	case s.rerr != nil:
		return s.rerr
	case s.finSent:
		return ErrClosed
	case s.eof:
		// The peer finished its side: a stream carries data one way at a
		// time, so it will not read what we would send.
		return ErrPeerFinished
	}
	return nil
}

// push queues a message whose payload is in place; it encodes the header.
// Once the stream is finished or aborted it refuses everything but the
// finish itself (fin): data that raced a Close from another goroutine would
// otherwise follow the finish, which the receiver takes for a protocol
// violation of the whole connection.
func (s *Stream) push(of outFrame, typ frame.Type, status frame.Status, fin bool, data int) error {
	h := s.cfg.Header
	h.Type, h.Status = typ, status
	frame.PutHeader(of.msg, h, len(of.msg)-frame.Overhead)
	s.mu.Lock()
	err := s.sendErrLocked()
	if fin && s.lerr == nil && s.rerr == nil {
		err = nil // finSent is the finish's own mark
	}
	if err == nil && s.released {
		err = ErrClosed
	}
	if err != nil {
		s.mu.Unlock()
		putBuf(of.buf)
		return err
	}
	s.outq = append(s.outq, of)
	if data > 0 || typ == frame.TypeStreamHole {
		s.sentAny = true // holes are content too: the crossing checks must see them
	}
	s.sentBytes.Add(int64(data)) // with the queueing: a finish queued after it sees it counted
	sched := !s.scheduled && !s.held
	if sched {
		s.scheduled = true
	}
	s.mu.Unlock()
	if sched {
		s.link.Schedule(s)
	}
	return nil
}

func (s *Stream) pushData(buf *[]byte, n int) error {
	return s.push(outFrame{buf: buf, msg: (*buf)[:frame.Overhead+n]}, frame.TypeStream, frame.StatusContinue, false, n)
}

// pushFinish queues the header-only frame that ends the data.
func (s *Stream) pushFinish(status frame.Status) {
	_ = s.push(outFrame{msg: make([]byte, frame.Overhead)}, frame.TypeStream, status, true, 0)
}

// sendOOB sends a STREAM frame ahead of data: acknowledgements and aborts,
// which follow no data of ours.
func (s *Stream) sendOOB(status frame.Status, payload []byte) {
	h := s.cfg.Header
	h.Type, h.Status = frame.TypeStream, status
	s.link.SendFrame(frame.Append(make([]byte, 0, frame.Overhead+len(payload)), h, payload))
}

// Write sends p as stream data. It returns once p is queued; flow control
// blocks it while the receiver is behind. A zero-length Write sends nothing.
func (s *Stream) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n, err := s.reserve(len(p))
		if err != nil {
			return written, err
		}
		buf := getBuf(n)
		copy((*buf)[frame.Overhead:], p[:n])
		if err := s.pushData(buf, n); err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// ReadFrom sends everything r yields until io.EOF, reading straight into
// frame buffers. On a sparse stream whose source is a file, the file's holes
// are sent as holes (found with SEEK_DATA/SEEK_HOLE) and never read.
// It does not finish the stream: call Close for that.
func (s *Stream) ReadFrom(r io.Reader) (int64, error) {
	if s.cfg.Sparse {
		if f, ok := r.(seekFile); ok {
			if n, handled, err := s.readFromSparse(f); handled {
				return n, err
			}
		}
	}
	return s.copyFrom(r, -1)
}

// copyFrom sends up to limit bytes of r (all of it if limit < 0).
func (s *Stream) copyFrom(r io.Reader, limit int64) (int64, error) {
	var total int64
	for limit < 0 || total < limit {
		want := s.cfg.ChunkSize
		if limit >= 0 {
			want = int(min(int64(want), limit-total))
		}
		n, err := s.reserve(want)
		if err != nil {
			return total, err
		}
		buf := getBuf(n)
		m, rerr := io.ReadFull(r, (*buf)[frame.Overhead:frame.Overhead+n])
		s.refund(n - m)
		if m > 0 {
			if err := s.pushData(buf, m); err != nil {
				return total, err
			}
			total += int64(m)
		} else {
			putBuf(buf)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
	return total, nil
}

// WriteHole sends a hole of n bytes: the receiver reads it as n zero bytes,
// or skips over it in a destination that can seek. The stream must be sparse.
func (s *Stream) WriteHole(ctx context.Context, n int64) error {
	if !s.cfg.Sparse {
		return ErrNotSparse
	}
	if n <= 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	for len(s.outq) >= maxQueued && s.sendErrLocked() == nil {
		s.sendCond.Wait()
	}
	err := s.sendErrLocked()
	s.mu.Unlock()
	if err != nil {
		return err
	}
	msg := make([]byte, frame.Overhead+frame.HolePayloadSize)
	frame.PutHole(msg[frame.Overhead:], n, 0)
	return s.push(outFrame{msg: msg}, frame.TypeStreamHole, frame.StatusContinue, false, 0)
}

// Close finishes the stream. On the sending side it tells the receiver that
// all data was sent and waits for its verdict: nil once the receiver has
// consumed everything, or the receiver's error (a *frame.Error), for example
// when its sink failed. On the receiving side, after io.EOF, it acknowledges
// the end; before the end it aborts the stream toward the sender. A side
// that has received no data yet cannot tell that it is the receiver: its
// Close finishes an empty stream, and a peer that was sending learns it
// (its Write and Close return ErrPeerFinished; it then aborts, so this
// Close returns an error too). To refuse an upload, CloseWithError says why.
func (s *Stream) Close() error { return s.Finish(context.Background()) }

// Finish is Close with a context bounding the wait for the verdict. If ctx
// ends first, the stream is aborted and ctx's error returned.
func (s *Stream) Finish(ctx context.Context) error {
	s.mu.Lock()
	if s.lerr != nil { // closed already: the same outcome again
		err := s.rerr
		var ae *abortError
		if err == nil && errors.As(s.lerr, &ae) {
			err = s.lerr // aborted locally (CloseWithError, or a Finish whose ctx ended): not a success
		}
		s.mu.Unlock()
		return err
	}
	if s.rerr != nil {
		err := s.rerr
		s.lerr = ErrClosed
		ack := s.eof && s.cfg.Role == CompatClient && !s.finSent
		s.finSent = true
		s.mu.Unlock()
		if ack {
			s.sendOOB(frame.StatusOK, nil) // as virsh does after a server's error
		}
		s.release()
		return err
	}
	if s.finSent { // another Close is waiting for the verdict: share it
		s.mu.Unlock()
		return s.awaitVerdict(ctx)
	}
	if s.gotData && (!s.eof || s.inBytes > 0 || len(s.inq) > 0 || s.holesUnread > 0) { // data or a hole left unread
		s.mu.Unlock()
		return s.CloseWithError(ErrReceiverClosed)
	}
	if s.eof && s.sentAny {
		// We sent data and the peer finished instead of consuming it (its
		// Close came before our data): acknowledging would lose the data
		// without a word, so abort, and the peer's Close learns it too.
		s.mu.Unlock()
		_ = s.CloseWithError(ErrPeerFinished)
		return ErrPeerFinished
	}
	if s.eof {
		// Receiver: acknowledge the sender's finish; in native mode the
		// verdict says how much was consumed (all of it, by now).
		s.finSent = true
		wait := s.cfg.Role == CompatClient
		s.verdict = !wait // our acknowledgement is the outcome: a concurrent Close shares it
		var verdict []byte
		if s.cfg.Role == Native {
			verdict = make([]byte, frame.VerdictPayloadSize)
			frame.PutVerdict(verdict, uint64(s.consumed))
		}
		s.mu.Unlock()
		s.sendOOB(frame.StatusOK, verdict)
		if !wait {
			s.setClosed()
			s.release()
			return nil
		}
		return s.awaitVerdict(ctx)
	}
	// Sender: mark the end of the data.
	s.finSent = true
	s.mu.Unlock()
	if s.cfg.Role == CompatServer {
		s.pushFinish(frame.StatusContinue)
	} else {
		s.pushFinish(frame.StatusOK)
	}
	return s.awaitVerdict(ctx)
}

func (s *Stream) awaitVerdict(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.sendCond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	for !s.verdict && s.rerr == nil && s.lerr == nil && ctx.Err() == nil {
		s.sendCond.Wait()
	}
	err := s.rerr
	if !s.verdict && err == nil && s.lerr != nil {
		err = s.lerr // aborted meanwhile by CloseWithError
	}
	timedOut := false
	if !s.verdict && err == nil {
		err, timedOut = ctx.Err(), true
	}
	s.mu.Unlock()
	if timedOut {
		_ = s.CloseWithError(err) // a no-op if the verdict came meanwhile
		return err
	}
	s.setClosed()
	s.release()
	return err
}

func (s *Stream) setClosed() {
	s.mu.Lock()
	if s.lerr == nil {
		s.lerr = ErrClosed
	}
	s.sendCond.Broadcast()
	s.recvCond.Broadcast()
	s.mu.Unlock()
}

// CloseWithError aborts the stream: queued data is dropped and the peer is
// told err (as a *frame.Error it can inspect; in compat mode a libvirt
// client's abort carries no error, as libvirt's does). Local reads and writes
// then fail. It returns nil, or the peer's error if it had already failed.
func (s *Stream) CloseWithError(err error) error {
	if err == nil {
		err = ErrAborted
	}
	s.mu.Lock()
	if s.lerr != nil || s.rerr != nil || s.verdict { // over already
		rerr := s.rerr
		if s.lerr == nil {
			s.lerr = ErrClosed
		}
		s.mu.Unlock()
		s.release()
		if errors.Is(rerr, ErrAborted) {
			return nil
		}
		return rerr
	}
	s.lerr = &abortError{err}
	s.dropQueueLocked()
	marker := s.gotData || s.finSent // a receiver, or our end marker is out already
	s.finSent = true
	s.sendCond.Broadcast()
	s.recvCond.Broadcast()
	s.mu.Unlock()

	var payload []byte
	if s.cfg.Role != CompatClient {
		payload = encodeAbort(err)
	}
	if s.cfg.Role == CompatServer && !marker {
		s.sendOOB(frame.StatusContinue, nil) // libvirtd's failing sender: end marker, then the error (capture 10)
	}
	s.sendOOB(frame.StatusError, payload)
	// libvirtd acknowledges a client's abort; other roles expect nothing.
	// Either way late frames are dropped once the stream is released.
	if s.cfg.Role != CompatClient {
		s.release()
	}
	return nil
}

// encodeAbort is the error payload of an abort: err itself if it is a
// *frame.Error, else an operation-aborted error in the stream domain.
func encodeAbort(err error) []byte {
	var fe *frame.Error
	if !errors.As(err, &fe) {
		fe = frame.NewError(frame.CodeOperationAborted, "%s", err.Error())
		fe.Domain = frame.DomainStream
	}
	return frame.EncodeError(fe)
}

func (s *Stream) dropQueueLocked() {
	for _, of := range s.outq {
		putBuf(of.buf)
	}
	s.outq = s.outq[:0]
}

type abortError struct{ err error }

func (e *abortError) Error() string { return "virtrpc: stream aborted: " + e.err.Error() }
func (e *abortError) Unwrap() error { return e.err }
