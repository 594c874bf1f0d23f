package stream

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/virtrpc/virtrpc/frame"
)

// chunk is one received data payload (buf[off:n]) or a hole (hole > 0).
type chunk struct {
	buf  *[]byte
	off  int
	n    int
	hole int64
}

func (c *chunk) empty() bool { return c.off >= c.n && c.hole == 0 }

// HandleFrame processes one STREAM or STREAM_HOLE message for this stream,
// reading its payload from fr. It runs on the connection's read loop and
// never waits for the consumer, except in compat mode, where there is no
// credit and a full buffer pauses the whole connection (libvirt does the
// same). An error is a protocol violation: the connection must close.
func (s *Stream) HandleFrame(h frame.Header, fr *frame.Reader) error {
	n := fr.Remaining()
	if h.Type == frame.TypeStreamHole {
		if !s.cfg.Sparse {
			return fmt.Errorf("%w: hole on a stream opened without sparse", ErrNotSparse)
		}
		if h.Status != frame.StatusContinue {
			return fmt.Errorf("hole with status %s", h.Status)
		}
		var p [frame.HolePayloadSize]byte
		if n != len(p) {
			return fmt.Errorf("hole payload of %d bytes, want %d", n, len(p))
		}
		if err := fr.ReadFull(p[:]); err != nil {
			return err
		}
		length, _, err := frame.ParseHole(p[:])
		if err != nil {
			return err
		}
		s.recvHole(length)
		return nil
	}
	switch h.Status {
	case frame.StatusContinue:
		if n == 0 {
			s.peerFinished() // libvirtd's end-of-data marker
			return nil
		}
		return s.recvData(fr, n)
	case frame.StatusOK:
		if s.cfg.Role != Native || n == 0 {
			if err := fr.Discard(); err != nil { // libvirt's OK is empty
				return err
			}
			s.gotOK(false, 0)
			return nil
		}
		var p [frame.VerdictPayloadSize]byte
		if n != len(p) {
			return fmt.Errorf("stream OK with a %d-byte payload, want 0 (a finish) or %d (a verdict)", n, len(p))
		}
		if err := fr.ReadFull(p[:]); err != nil {
			return err
		}
		consumed, _ := frame.ParseVerdict(p[:])
		return s.gotOK(true, consumed)
	case frame.StatusError:
		p, err := fr.Payload()
		if err != nil {
			return err
		}
		s.gotError(p)
		return nil
	}
	return fmt.Errorf("stream frame with unknown status %s", h.Status)
}

func (s *Stream) recvData(fr *frame.Reader, n int) error {
	s.mu.Lock()
	if s.cfg.Role == Native && s.received+int64(n) > s.recvLimit {
		lim, got := s.recvLimit, s.received
		s.mu.Unlock()
		return fmt.Errorf("peer sent %d bytes past its credit (granted %d, had sent %d)", got+int64(n)-lim, lim, got)
	}
	if s.eof {
		s.mu.Unlock()
		return errors.New("stream data after the sender's finish")
	}
	s.received += int64(n)
	s.mu.Unlock()

	buf := getRecvBuf(n)
	if err := fr.ReadFull((*buf)[:n]); err != nil {
		putBuf(buf)
		return err
	}
	s.recvBytes.Add(int64(n))

	s.mu.Lock()
	if s.lerr != nil || s.rerr != nil {
		// Closed or aborted locally: late data is dropped, but still counts
		// as consumed so the sender is not left waiting for credit.
		s.mu.Unlock()
		putBuf(buf)
		return nil
	}
	if t := s.tailWithRoom(n); t != nil {
		// A small frame joins the last queued chunk, so a peer sending
		// tiny frames cannot make each byte of credit pin a whole buffer.
		copy((*t.buf)[t.n:], (*buf)[:n])
		t.n += n
		putBuf(buf)
	} else {
		s.inq = append(s.inq, chunk{buf: buf, n: n})
	}
	s.inBytes += n
	s.maxIn = max(s.maxIn, s.inBytes)
	s.gotData = true
	s.recvCond.Broadcast()
	var grant int64
	if s.cfg.Role != Native {
		for s.inBytes > s.cfg.CompatLimit && s.lerr == nil && s.rerr == nil {
			s.recvCond.Wait()
		}
	} else {
		grant = s.grantLocked()
	}
	s.mu.Unlock()
	if grant > 0 {
		s.link.SendCredit(s.cfg.Header.Serial, uint64(grant), false)
	}
	return nil
}

// coalesceMax is the largest data frame that is copied into the last queued
// chunk when it has room. A larger frame keeps its own buffer, of a size
// class at most 4 times its payload, so memory held stays within a few
// times the bytes buffered whatever frame sizes the peer picks.
const coalesceMax = 4 << 10

// tailWithRoom returns the last queued chunk if n is small, and the chunk
// holds data and has room for n more bytes. The reader takes chunks off the
// front only, under s.mu, so the tail is not being read.
func (s *Stream) tailWithRoom(n int) *chunk {
	k := len(s.inq)
	if n > coalesceMax || k == 0 || s.inq[k-1].buf == nil {
		return nil
	}
	if t := &s.inq[k-1]; len(*t.buf)-t.n >= n {
		return t
	}
	return nil
}

func (s *Stream) recvHole(length int64) {
	if length == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lerr != nil || s.rerr != nil {
		return
	}
	// Merge with a trailing hole so a flood of holes cannot grow the queue.
	if k := len(s.inq); k > 0 && s.inq[k-1].buf == nil && s.inq[k-1].hole <= math.MaxInt64-length {
		s.inq[k-1].hole += length
	} else {
		s.inq = append(s.inq, chunk{hole: length})
		s.holesUnread++
	}
	s.gotData = true
	s.recvCond.Broadcast()
}

func (s *Stream) peerFinished() {
	s.mu.Lock()
	s.eof = true
	if s.finSent && !s.verdict && s.lerr == nil && s.rerr == nil && s.sentAny {
		// We were sending and had finished; the peer ended its side
		// instead of answering: it did not read our data.
		s.rerr = ErrPeerFinished
	}
	s.recvCond.Broadcast()
	s.sendCond.Broadcast()
	s.mu.Unlock()
}

// gotOK handles STREAM/OK: the verdict on our finish, or the peer's finish.
// In native mode a verdict carries the bytes the receiver consumed, and a
// finish nothing; compat mode tells them apart by who finished first.
func (s *Stream) gotOK(isVerdict bool, consumed uint64) error {
	s.mu.Lock()
	if isVerdict && !s.finSent {
		s.mu.Unlock()
		return errors.New("stream verdict without a finish")
	}
	if s.cfg.Role == Native && s.finSent && !isVerdict && s.lerr == nil {
		// Both sides finished at once: the peer's finish crossed ours.
		// Nothing we sent was lost only if we sent nothing.
		s.eof = true
		s.verdict = !s.sentAny
		switch {
		case s.rerr != nil:
		case !s.verdict:
			s.rerr = ErrPeerFinished
		case s.gotData:
			s.rerr = ErrReceiverClosed // data came after our finish, unread
		}
		s.sendCond.Broadcast()
		s.recvCond.Broadcast()
		s.mu.Unlock()
		return nil
	}
	if isVerdict && s.lerr == nil && s.rerr == nil && consumed != uint64(s.sentBytes.Load()) {
		s.rerr = fmt.Errorf("%w: the receiver consumed %d of the %d bytes sent", ErrIncomplete, consumed, s.sentBytes.Load())
		s.sendCond.Broadcast()
		s.mu.Unlock()
		return nil
	}
	if s.cfg.Role == CompatServer && s.finSent && s.gotData && !s.sentAny && s.lerr == nil && s.rerr == nil {
		// Our end-of-data marker of an empty send crossed the client's
		// upload: this OK is its finish, and the data was not read. Tell
		// it so, as libvirtd reports a failed upload.
		s.eof, s.verdict = true, true
		s.rerr = ErrReceiverClosed // for our Close: it dropped an upload
		s.sendCond.Broadcast()
		s.recvCond.Broadcast()
		s.mu.Unlock()
		s.sendOOB(frame.StatusError, encodeAbort(ErrReceiverClosed))
		return nil
	}
	if s.finSent {
		s.verdict = true
		ack := s.cfg.Role == CompatServer && !s.eof && s.lerr == nil
		aborted := s.lerr != nil
		s.eof = true
		s.sendCond.Broadcast()
		s.recvCond.Broadcast()
		s.mu.Unlock()
		if ack {
			// libvirtd answers the client's OK to its end-of-data marker.
			s.sendOOB(frame.StatusOK, nil)
		}
		if aborted {
			s.release() // the ack of our abort: nothing more will come
		}
		return nil
	}
	s.eof = true
	s.recvCond.Broadcast()
	s.sendCond.Broadcast() // a writer waiting for credit learns the peer finished
	s.mu.Unlock()
	return nil
}

// gotError handles STREAM/ERROR: the peer aborted, or failed.
func (s *Stream) gotError(payload []byte) {
	var err error = ErrAborted
	if len(payload) > 0 {
		if e, derr := frame.DecodeError(payload); derr == nil {
			err = e
		} else {
			err = fmt.Errorf("%w (undecodable error payload: %v)", ErrAborted, derr)
		}
	}
	s.mu.Lock()
	already := s.rerr != nil
	if !already {
		s.rerr = err
	}
	local := s.lerr != nil
	s.dropQueueLocked()
	for _, c := range s.inq {
		putBuf(c.buf) // Read returns the error first: nobody reads these
	}
	s.inq, s.inBytes = nil, 0
	s.sendCond.Broadcast()
	s.recvCond.Broadcast()
	s.mu.Unlock()
	if s.cfg.Role == CompatServer && !already && !local {
		// libvirtd acknowledges a client's abort with STREAM/OK.
		s.mu.Lock()
		s.finSent = true
		s.mu.Unlock()
		s.sendOOB(frame.StatusOK, nil)
	}
	// Nothing more comes from a peer that aborted (a libvirt client waits
	// for the ack just sent): release now, so a stream whose user stops at
	// the error without Close does not stay registered with its buffers.
	s.release()
}

// next returns the next chunk for the reader, waiting for one. It returns
// io.EOF after the sender's finish.
func (s *Stream) next() (chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.lerr != nil {
			return chunk{}, s.lerr
		}
		if s.rerr != nil {
			return chunk{}, s.rerr
		}
		if len(s.inq) > 0 {
			c := s.inq[0]
			copy(s.inq, s.inq[1:])
			s.inq[len(s.inq)-1] = chunk{}
			s.inq = s.inq[:len(s.inq)-1]
			return c, nil
		}
		if s.eof {
			return chunk{}, io.EOF
		}
		s.recvCond.Wait()
	}
}

func (s *Stream) holeRead() {
	s.mu.Lock()
	s.holesUnread--
	s.mu.Unlock()
}

// consume accounts for n data bytes taken by the reader and grants credit.
func (s *Stream) consume(n int) {
	s.mu.Lock()
	s.inBytes -= n
	if s.cfg.Role != Native {
		s.recvCond.Broadcast() // wake a paused read loop
		s.mu.Unlock()
		return
	}
	s.consumed += int64(n)
	grant := s.grantLocked()
	s.mu.Unlock()
	if grant > 0 {
		s.link.SendCredit(s.cfg.Header.Serial, uint64(grant), true)
	}
}

// grantLocked decides how much credit to grant now. Credit keeps two
// bounds: bytes in flight (granted but not yet received) stay within the
// window, which bounds the queue a call can be stuck behind in the sockets;
// bytes buffered here and not yet consumed stay within the buffer limit,
// which bounds memory. Granting as data is received, not only as it is
// consumed, means a consumer that is briefly not scheduled does not stall
// the sender.
func (s *Stream) grantLocked() int64 {
	if s.lerr != nil || s.rerr != nil || s.eof {
		return 0
	}
	if s.cfg.Target != nil {
		want := max(min(s.cfg.Target(), s.cfg.MaxWindow), s.cfg.RecvWindow)
		switch {
		case want > s.window && s.cfg.Budget.take(want-s.window):
			s.window = want
		case want < s.window:
			s.cfg.Budget.give(s.window - want) // granting less is always safe
			s.window = want
		}
	}
	limit := min(s.received+s.window, s.consumed+s.bufLimit())
	if grant := limit - s.recvLimit; grant >= s.grantStep() {
		s.recvLimit = limit
		return grant
	}
	return 0
}

// grantStep is the least credit worth a message. Small steps keep the
// sender's usable window close to the full window (it never drops below
// window − step), so a window near bandwidth × RTT fills the link without a
// standing queue; on a fast local link a step of 512 KiB keeps the credit
// messages few.
func (s *Stream) grantStep() int64 {
	return max(s.window/8, min(s.window/2, 512<<10))
}

// bufLimit is the most data in flight plus buffered that the stream allows.
func (s *Stream) bufLimit() int64 { return max(4*s.window, s.cfg.BufferLimit) }

func (s *Stream) localErr() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lerr != nil {
		return s.lerr
	}
	return nil
}

// current returns the reader's chunk, taking the next one (and recycling
// the spent one's buffer) when it is used up.
func (s *Stream) current() (*chunk, error) {
	if s.cur.empty() {
		putBuf(s.cur.buf)
		s.cur = chunk{}
		c, err := s.next()
		if err != nil {
			return nil, err
		}
		s.cur = c
	}
	return &s.cur, nil
}

// Read reads stream data; holes read as zeros. It returns io.EOF after the
// sender finished, or the peer's error if it aborted.
func (s *Stream) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := s.localErr(); err != nil {
		return 0, err
	}
	c, err := s.current()
	if err != nil {
		return 0, err
	}
	if c.buf == nil {
		n := int(min(int64(len(p)), c.hole))
		clear(p[:n])
		c.hole -= int64(n)
		if c.hole == 0 {
			s.holeRead()
		}
		return n, nil
	}
	n := copy(p, (*c.buf)[c.off:c.n])
	c.off += n
	s.consume(n)
	return n, nil
}

// WriteTo writes the stream's data to w until the sender finishes. Holes are
// skipped with Seek when w is an io.Seeker (a trailing hole extends w with
// Truncate when w has it, else with one written zero byte), and written as
// zeros otherwise. If w fails, the stream is aborted with w's error, which
// the sender's Close returns.
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	seeker, _ := w.(io.Seeker)
	var total int64
	pendingHole := int64(0)
	for {
		c, err := s.current()
		if err == io.EOF {
			if pendingHole > 0 {
				if err := finishHole(w, seeker, pendingHole); err != nil {
					_ = s.CloseWithError(err)
					return total, err
				}
			}
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if c.buf == nil {
			if seeker != nil {
				if _, err := seeker.Seek(c.hole, io.SeekCurrent); err != nil {
					_ = s.CloseWithError(err)
					return total, err
				}
				pendingHole = c.hole
			} else if err := writeZeros(w, c.hole); err != nil {
				_ = s.CloseWithError(err)
				return total, err
			}
			total += c.hole
			c.hole = 0
			s.holeRead()
			continue
		}
		n, err := w.Write((*c.buf)[c.off:c.n])
		c.off += n
		total += int64(n)
		s.consume(n)
		if err == nil && c.off < c.n {
			err = io.ErrShortWrite
		}
		if err != nil {
			_ = s.CloseWithError(err)
			return total, err
		}
		pendingHole = 0
	}
}

func finishHole(w io.Writer, seeker io.Seeker, hole int64) error {
	off, err := seeker.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if t, ok := w.(interface{ Truncate(int64) error }); ok {
		return t.Truncate(off)
	}
	if _, err := seeker.Seek(-1, io.SeekCurrent); err != nil {
		return err
	}
	_, err = w.Write([]byte{0})
	return err
}

var zeros [64 << 10]byte

func writeZeros(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := w.Write(zeros[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// AddCredit applies a grant from the receiver (native mode). A grant that
// would overflow is a protocol violation.
func (s *Stream) AddCredit(n uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > 1<<40 || s.credit+int64(n) > 1<<40 {
		return fmt.Errorf("credit grant of %d bytes is absurd", n)
	}
	s.credit += int64(n)
	s.sendCond.Broadcast()
	return nil
}

// ReturnWindow gives the stream's grown window back to the connection's
// budget; the connection calls it when the stream is released.
func (s *Stream) ReturnWindow() {
	s.mu.Lock()
	grown := s.window - s.cfg.RecvWindow
	s.window = s.cfg.RecvWindow
	s.mu.Unlock()
	s.cfg.Budget.give(grown)
}
