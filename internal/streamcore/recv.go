package streamcore

import (
	"context"
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
		return s.recvHole(length)
	}
	switch h.Status {
	case frame.StatusContinue:
		if n == 0 {
			return s.gotEmptyContinue() // libvirtd's end-of-data marker
		}
		return s.recvData(fr, n)
	case frame.StatusOK:
		if s.cfg.Role != Native || n == 0 {
			if err := fr.Discard(); err != nil { // libvirt's OK is empty
				return err
			}
			return s.gotOK(false, 0)
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

// recvCheckLocked is why data (or a hole) of n bytes may not arrive now:
// against the declared direction, after the peer's finish, or past the
// credit granted.
func (s *Stream) recvCheckLocked(n int) error {
	switch {
	case s.recv == recvNone:
		return fmt.Errorf("%w: stream data toward a side that only sends", ErrDirection)
	case s.recv != recvOpen:
		return errors.New("stream data after the sender's finish")
	case s.cfg.Role == Native && s.received+int64(n) > s.recvLimit:
		return fmt.Errorf("peer sent %d bytes past its credit (granted %d, had sent %d)", s.received+int64(n)-s.recvLimit, s.recvLimit, s.received)
	}
	return nil
}

func (s *Stream) recvData(fr *frame.Reader, n int) error {
	s.mu.Lock()
	if err := s.recvCheckLocked(n); err != nil {
		s.mu.Unlock()
		return err
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
	if s.aborted != nil || s.rerr != nil {
		s.mu.Unlock() // aborted: late data is dropped
		putBuf(buf)
		return nil
	}
	var grant int64
	if s.discard {
		// The reader is gone: drop it, and let the sender go on to its
		// finish (the verdict tells it what was consumed).
		s.dropped += int64(n)
		putBuf(buf)
		grant = s.grantLocked()
		s.mu.Unlock()
		if grant > 0 {
			s.link.SendCredit(s.cfg.Header.Serial, uint64(grant), false)
		}
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
	s.recvCond.Broadcast()
	if s.cfg.Role != Native {
		for s.inBytes > s.cfg.CompatLimit && s.aborted == nil && s.rerr == nil && !s.discard {
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

func (s *Stream) recvHole(length int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.recvCheckLocked(0); err != nil {
		return err
	}
	if length == 0 || s.aborted != nil || s.rerr != nil || s.discard {
		return nil
	}
	// Merge with a trailing hole so a flood of holes cannot grow the queue.
	if k := len(s.inq); k > 0 && s.inq[k-1].buf == nil && s.inq[k-1].hole <= math.MaxInt64-length {
		s.inq[k-1].hole += length
	} else {
		s.inq = append(s.inq, chunk{hole: length})
		s.holesUnread++
	}
	s.recvCond.Broadcast()
	return nil
}

// next returns the next chunk for the reader, waiting for one. It returns
// io.EOF after the sender's finish.
func (s *Stream) next() (chunk, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if err := s.recvErrLocked(); err != nil {
			return chunk{}, err
		}
		if err := interrupted(context.Background(), s.rdl); err != nil {
			return chunk{}, err
		}
		if len(s.inq) > 0 {
			c := s.inq[0]
			copy(s.inq, s.inq[1:])
			s.inq[len(s.inq)-1] = chunk{}
			s.inq = s.inq[:len(s.inq)-1]
			return c, nil
		}
		if s.recv != recvOpen {
			return chunk{}, io.EOF
		}
		s.recvCond.Wait()
	}
}

// recvErrLocked is why the reader cannot read now, or nil.
func (s *Stream) recvErrLocked() error {
	switch {
	case s.aborted != nil:
		return s.aborted
	case s.closed:
		return ErrClosed
	case s.rerr != nil:
		return s.rerr
	case s.recv == recvNone:
		return fmt.Errorf("%w: this side only sends", ErrDirection)
	}
	return nil
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
	if s.aborted != nil || s.rerr != nil || s.recv != recvOpen {
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
	limit := min(s.received+s.window, s.consumed+s.dropped+s.bufLimit())
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
	switch {
	case s.aborted != nil:
		return s.aborted
	case s.closed:
		return ErrClosed
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
