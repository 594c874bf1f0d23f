package rpc

import (
	"sync"
	"time"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/stream"
)

// maxCallQueue bounds the bytes of calls, replies and messages waiting for
// the writer; enqueuers wait beyond it.
const maxCallQueue = 8 << 20

// maxBatch: small messages are coalesced into one write up to this size.
const maxBatch = 64 << 10

// scheduler is the connection's single writer. Priority: control (keepalive,
// credit) first, then calls, replies and messages, then stream data, one
// frame per stream in round-robin. Control and calls are looked at again
// before every data frame, and only one data frame is ever being written, so
// a small call waits for at most one frame (plus the few bytes the socket
// holds under TCP_NOTSENT_LOWAT) however much bulk data is queued.
type scheduler struct {
	c *Conn

	mu        sync.Mutex
	space     sync.Cond // callBytes dropped below the bound, or closing
	ctrl      [][]byte
	calls     [][]byte
	callBytes int
	ready     []*stream.Stream
	closing   bool
	graceful  bool
	wake      chan struct{}
}

func (s *scheduler) init(c *Conn) {
	s.c = c
	s.space.L = &s.mu
	s.wake = make(chan struct{}, 1)
}

func (s *scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sendControl queues an encoded control message ahead of everything.
func (s *scheduler) sendControl(msg []byte) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.ctrl = append(s.ctrl, msg)
	s.mu.Unlock()
	s.kick()
}

// sendCall queues an encoded call, reply or message, waiting while the
// queue is over its bound. It fails once the connection is closing.
func (s *scheduler) sendCall(msg []byte) error {
	s.mu.Lock()
	for s.callBytes > maxCallQueue && !s.closing {
		s.space.Wait()
	}
	if s.closing {
		s.mu.Unlock()
		return s.c.err
	}
	s.calls = append(s.calls, msg)
	s.callBytes += len(msg)
	s.mu.Unlock()
	s.kick()
	return nil
}

// Schedule implements stream.Link.
func (s *scheduler) schedule(st *stream.Stream) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.ready = append(s.ready, st)
	s.mu.Unlock()
	s.kick()
}

func (s *scheduler) shutdown(graceful bool) {
	s.mu.Lock()
	s.closing = true
	s.graceful = graceful
	s.ready = nil
	s.space.Broadcast()
	s.mu.Unlock()
	if graceful {
		_ = s.c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	}
	s.kick()
}

func (s *scheduler) run() {
	c := s.c
	defer c.loops.Done()
	defer c.nc.Close()
	batch := make([]byte, 0, maxBatch)
	for {
		s.mu.Lock()
		for len(s.ctrl) == 0 && len(s.calls) == 0 && (len(s.ready) == 0 || s.closing) {
			if s.closing {
				s.mu.Unlock()
				return
			}
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-c.done:
			}
			s.mu.Lock()
		}
		if s.closing && !s.graceful {
			s.mu.Unlock()
			return
		}
		batch = batch[:0]
		frames := 0
		for _, m := range s.ctrl {
			batch = append(batch, m...)
			frames++
		}
		clear(s.ctrl)
		s.ctrl = s.ctrl[:0]
		for len(s.calls) > 0 && (len(batch) == 0 || len(batch)+len(s.calls[0]) <= maxBatch) {
			m := s.calls[0]
			s.calls[0] = nil
			s.calls = s.calls[1:]
			s.callBytes -= len(m)
			if len(batch) == 0 && len(m) > maxBatch {
				batch = m // a big message goes out as it is, without a copy
			} else {
				batch = append(batch, m...)
			}
			frames++
		}
		if len(s.calls) == 0 {
			s.calls = nil // let a burst's backing array go
		}
		s.space.Broadcast()
		var st *stream.Stream
		if len(batch) == 0 {
			st = s.ready[0]
			s.ready[0] = nil
			s.ready = s.ready[1:]
		}
		s.mu.Unlock()

		if st == nil {
			if !s.write(batch, frames) {
				return
			}
			if cap(batch) > 4*maxBatch {
				batch = make([]byte, 0, maxBatch)
			}
			continue
		}
		f, more := st.PopFrame()
		if more {
			s.mu.Lock()
			if !s.closing {
				s.ready = append(s.ready, st)
			}
			s.mu.Unlock()
		}
		msg := f.Bytes()
		if len(msg) == 0 {
			continue
		}
		ok := s.write(msg, 1)
		if len(msg) > frame.Overhead {
			c.stats.streamBytesOut.Add(int64(len(msg) - frame.Overhead))
		}
		f.Done()
		if !ok {
			return
		}
	}
}

func (s *scheduler) write(b []byte, frames int) bool {
	c := s.c
	if _, err := c.nc.Write(b); err != nil {
		_ = c.closeWith(err)
		return false
	}
	c.stats.framesOut.Add(int64(frames))
	c.stats.bytesOut.Add(int64(len(b)))
	return true
}
