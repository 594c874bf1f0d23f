package streamcore

import (
	"context"
	"fmt"
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
	ctl bool    // our finish, or a compat acknowledgement that ends the stream (pushCtl)
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
	s.finOut = s.finOut || of.ctl // on its way to the peer: no abort can overtake it now
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
// want bytes of credit. ctx (may be nil) and the write deadline end the
// wait.
func (s *Stream) reserve(ctx context.Context, want int) (int, error) {
	stop := s.watch(ctx, &s.sendCond)
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	want = min(want, s.cfg.ChunkSize)
	for {
		if err := s.sendErrLocked(); err != nil {
			return 0, err
		}
		if err := interrupted(ctx, s.wdl); err != nil {
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

// sendErrLocked is why data cannot be sent now, or nil.
func (s *Stream) sendErrLocked() error {
	switch {
	case s.aborted != nil:
		return s.aborted
	case s.rerr != nil:
		return s.rerr
	case s.closed:
		return ErrClosed
	case s.send == sendNone:
		return fmt.Errorf("%w: this side only receives", ErrDirection)
	case s.send != sendOpen:
		return ErrClosed // finished (CloseWrite)
	}
	return nil
}

// push queues a message whose payload is in place; it encodes the header.
// Data is refused once the stream is finished or aborted; a control
// message of the data queue (ctl: a finish, or an acknowledgement that must
// follow our data) only once it is aborted or failed: data that raced a
// Close from another goroutine would otherwise follow the finish, which
// the receiver takes for a protocol violation of the whole connection.
func (s *Stream) push(of outFrame, typ frame.Type, status frame.Status, ctl, direct bool, data int) error {
	h := s.cfg.Header
	h.Type, h.Status = typ, status
	frame.PutHeader(of.msg, h, len(of.msg)-frame.Overhead)
	s.mu.Lock()
	var err error
	switch {
	case ctl && s.aborted != nil:
		err = s.aborted
	case ctl && s.rerr != nil:
		err = s.rerr
	case !ctl:
		err = s.sendErrLocked()
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
	s.sentBytes.Add(int64(data)) // with the queueing: a finish queued after it sees it counted
	sched := !s.scheduled && !s.held
	if sched {
		s.scheduled = true
	}
	direct = direct && s.wdl.IsZero()
	s.mu.Unlock()
	if sched {
		s.link.Schedule(s, direct)
	}
	return nil
}

func (s *Stream) pushData(buf *[]byte, n int) error {
	return s.push(outFrame{buf: buf, msg: (*buf)[:frame.Overhead+n]}, frame.TypeStream, frame.StatusContinue, false, true, n)
}

// pushCtl queues a header-only STREAM frame behind our data: a finish, or
// a compat acknowledgement that ends the stream.
func (s *Stream) pushCtl(status frame.Status) {
	_ = s.push(outFrame{msg: make([]byte, frame.Overhead), ctl: true}, frame.TypeStream, status, true, false, 0)
}

// sendOOB sends a STREAM frame ahead of data: acknowledgements, verdicts
// and aborts, which follow no data of ours.
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
		n, err := s.reserve(context.Background(), len(p))
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
// frame buffers; what each Read returns is sent at once, so a socket's
// request is not held back waiting for a full frame. On a sparse stream whose source is a file, the file's holes
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
		n, err := s.reserve(context.Background(), want)
		if err != nil {
			return total, err
		}
		buf := getBuf(n)
		// What one Read returns goes out at once: waiting to fill the frame
		// would hold an interactive source's request (a tunnelled NBD or
		// console socket) until more data came, which a request/response
		// protocol never sends. Files and generators fill frames anyway.
		m, rerr := io.ReadAtLeast(r, (*buf)[frame.Overhead:frame.Overhead+n], 1)
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
// It waits for queue space until ctx ends or the write deadline passes.
func (s *Stream) WriteHole(ctx context.Context, n int64) error {
	if !s.cfg.Sparse {
		return ErrNotSparse
	}
	if n <= 0 {
		return nil
	}
	stop := s.watch(ctx, &s.sendCond)
	s.mu.Lock()
	var err error
	for {
		if err = s.sendErrLocked(); err != nil {
			break
		}
		if err = interrupted(ctx, s.wdl); err != nil {
			break
		}
		if len(s.outq) < maxQueued {
			break
		}
		s.sendCond.Wait()
	}
	s.mu.Unlock()
	stop()
	if err != nil {
		return err
	}
	msg := make([]byte, frame.Overhead+frame.HolePayloadSize)
	frame.PutHole(msg[frame.Overhead:], n, 0)
	return s.push(outFrame{msg: msg}, frame.TypeStreamHole, frame.StatusContinue, false, ctx.Done() == nil, 0)
}
