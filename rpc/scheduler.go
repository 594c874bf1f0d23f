package rpc

import (
	"context"
	"fmt"
	"sync"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/internal/streamcore"
)

// maxCallQueue bounds the bytes of calls, replies and messages waiting for
// the writer; enqueuers wait beyond it.
const maxCallQueue = 8 << 20

// maxBatch: small messages are coalesced into one write up to this size.
const maxBatch = 64 << 10

// maxControlQueue bounds the control messages (pongs, credit, stream
// acknowledgements) waiting for the socket. They are queued from the read
// loop, which must not wait, so a peer that sends without ever reading would
// grow the queue without end; past this bound the connection closes. It
// counts messages, not bytes: those a peer can cause are 36 bytes at most
// (about 1 MiB in all), while a stream abort of ours may carry a long error.
const maxControlQueue = 1 << 15

var errControlBacklog = fmt.Errorf("the peer reads nothing: over %d control messages queued", maxControlQueue)

// scheduler is the connection's single writer. Priority: control (keepalive,
// credit) first, then calls, replies and messages, then stream data, one
// frame per stream in round-robin. Control and calls are looked at again
// before every data frame, and only one data frame is ever being written, so
// a small call waits for at most one frame (plus the few bytes the socket
// holds under TCP_NOTSENT_LOWAT) however much bulk data is queued.
type scheduler struct {
	c *Conn

	mu         sync.Mutex
	space      sync.Cond // callBytes dropped below the bound, or closing
	ctrl       []byte    // encoded control messages, back to back
	ctrlN      int       // how many messages ctrl holds
	pongQueued bool      // ctrl holds a PONG; one answers any number of pings
	calls      []queuedMsg
	callBytes  int
	charged    int64 // memory budget charge of calls (queuedMsg.cost)
	ready      []*streamcore.Stream
	closing    bool
	wake       chan struct{}
	// writing is the write token: whoever holds it owns the socket and
	// batch. The writer goroutine takes it for every write; a goroutine
	// that queues a reply or credit, or a stream's frame, while the token
	// is free writes it itself, saving a goroutine hand-off on an idle
	// direction. Only goroutines that have nothing to return early for do
	// (see enqueue): a Write cannot be abandoned halfway.
	writing  bool
	batch    []byte
	inflight int64        // budget charge of the messages in batch (see collectLocked)
	batcher  writeBatcher // under nc, or nil (batchwrite.go)
}

func (s *scheduler) init(c *Conn) {
	s.c = c
	s.batcher = findBatcher(c.nc)
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
// direct allows writing it on the calling goroutine when the socket is
// idle; the read loop passes false so it never blocks on a write.
func (s *scheduler) sendControl(msg []byte, direct bool) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	if s.ctrlN >= maxControlQueue {
		s.mu.Unlock()
		s.c.closeWith(errControlBacklog)
		return
	}
	s.ctrl = append(s.ctrl, msg...) // copied: callers pass stack buffers
	s.ctrlN++
	s.flushOrKick(direct)
}

// sendPong queues a PONG, from the read loop, unless one is queued already.
func (s *scheduler) sendPong(msg []byte) {
	s.mu.Lock()
	if s.pongQueued {
		s.mu.Unlock()
		return
	}
	s.pongQueued = true
	s.mu.Unlock()
	s.sendControl(msg, false)
}

// flushOrKick runs with s.mu held and releases it: it writes the queued
// control and call messages itself if the write token is free, else it
// wakes the writer goroutine.
func (s *scheduler) flushOrKick(direct bool) {
	if !direct || s.writing || s.closing {
		s.mu.Unlock()
		s.kick()
		return
	}
	s.writing = true
	batch, frames, replies := s.collectLocked(s.batch[:0])
	s.mu.Unlock()
	s.write(batch, frames, replies) // a failure closes the connection
	s.release(batch, nil)
}

// release gives the write token back, with the batch buffer for reuse, and
// puts requeue (a stream with more frames) back in the round-robin. It wakes
// the writer goroutine if work is left, or if the connection is closing: the
// writer may be waiting for the token to go, and it must then end (after a
// failed write the connection is always closing).
func (s *scheduler) release(batch []byte, requeue *streamcore.Stream) {
	s.mu.Lock()
	written := s.inflight
	s.inflight = 0
	s.batch = batch[:0]
	if cap(batch) > 4*maxBatch {
		s.batch = nil // do not keep a burst's buffer
	}
	s.writing = false
	if requeue != nil && !s.closing {
		s.ready = append(s.ready, requeue)
	}
	wake := len(s.ctrl) > 0 || len(s.calls) > 0 || len(s.ready) > 0 || s.closing
	s.mu.Unlock()
	if written > 0 { // not per stream frame: the budget has a lock
		s.c.mem.give(written)
	}
	if wake {
		s.kick()
	}
}

// sendCall queues an encoded call, reply or message, waiting while the
// queue is over its bound. It fails once the connection is closing. direct
// allows writing on the calling goroutine when the socket is idle; the read
// loop passes false, so two peers' read loops can never both block writing
// to each other.
func (s *scheduler) sendCall(ctx context.Context, msg []byte, direct bool) error {
	return s.enqueue(ctx, msg, direct, nil)
}

// queueThen queues msg for the writer goroutine, as the read loop queues
// replies, and runs then under the queue's lock: nothing queued after then
// ran can go out before msg, and msg cannot go out before then ran.
func (s *scheduler) queueThen(msg []byte, then func()) error {
	return s.enqueue(context.Background(), msg, false, then)
}

// enqueue queues msg. A caller whose ctx can end never writes the socket
// itself, even when the token is free: toward a peer that reads nothing its
// Write would block out of ctx's reach, and it cannot be cut short either (a
// frame written in part cannot be taken back, and a write deadline breaks a
// tls.Conn for good). So the writer goroutine writes it, and the caller
// waits for its reply or its ctx, whichever comes first; a frame whose
// caller gave up is still written whole (or the connection closes), and the
// late reply is dropped. Callers with a ctx that never ends (replies,
// Background calls) keep the direct write.
//
// What this side sends of its own (calls, messages, the HELLO reply) is
// not charged to the memory budget, which bounds what the peer makes us
// hold: its callers wait on the queue's bound instead.
func (s *scheduler) enqueue(ctx context.Context, msg []byte, direct bool, then func()) error {
	direct = direct && ctx.Done() == nil
	s.mu.Lock()
	if s.callBytes > maxCallQueue && !s.closing && ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			s.mu.Lock()
			s.space.Broadcast()
			s.mu.Unlock()
		})
		defer stop()
	}
	for s.callBytes > maxCallQueue && !s.closing {
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return err
		}
		s.space.Wait()
	}
	return s.appendLocked(queuedMsg{b: msg}, direct, then)
}

// queueReply queues a reply, charged queuedCost(len(msg)) to the memory
// budget, without waiting for the queue's bound: replies are bounded by the
// budget instead, so neither the read loop nor a handler parks behind a
// peer that reads nothing. The charge is given back once it is written
// (release) or dropped.
func (s *scheduler) queueReply(msg []byte, direct bool, then func()) error {
	s.mu.Lock()
	return s.appendLocked(queuedMsg{b: msg, cost: queuedCost(len(msg))}, direct, then)
}

// queuedMsg is a queued call, reply or message, and what it is charged.
type queuedMsg struct {
	b    []byte
	cost int64 // in the memory budget: 0 for our own calls and messages
}

// appendLocked runs with s.mu held and releases it.
func (s *scheduler) appendLocked(msg queuedMsg, direct bool, then func()) error {
	if s.closing {
		s.mu.Unlock()
		s.c.mem.give(msg.cost)
		return s.c.err
	}
	s.calls = append(s.calls, msg)
	s.callBytes += len(msg.b)
	s.charged += msg.cost
	if then != nil {
		then()
	}
	s.flushOrKick(direct)
	return nil
}

// schedule takes a stream that has a frame ready. If the socket is idle and
// no other stream is waiting, the calling goroutine (the stream's producer)
// writes the frame itself, after any queued control and calls: bulk data
// then costs no goroutine hand-off, as with a plain TLS connection, and the
// other core stays free for the read loops. Otherwise the stream joins the
// round-robin served by the writer goroutine. A producer that must be able
// to return early (a deadline, a ctx) passes direct false and never writes.
func (s *scheduler) schedule(st *streamcore.Stream, direct bool) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	if !direct || s.writing || len(s.ready) > 0 {
		s.ready = append(s.ready, st)
		s.mu.Unlock()
		s.kick()
		return
	}
	s.writing = true
	batch, frames, replies := s.collectLocked(s.batch[:0])
	s.mu.Unlock()

	var requeue *streamcore.Stream
	if frames == 0 || s.write(batch, frames, replies) {
		f, more := st.PopFrame()
		if s.writeData(f) && more {
			requeue = st
		}
	}
	s.release(batch, requeue)
}

// writeData writes a popped stream frame and recycles its buffer.
func (s *scheduler) writeData(f streamcore.Frame) bool {
	msg := f.Bytes()
	if len(msg) == 0 {
		return true
	}
	if len(msg) > frame.Overhead {
		s.c.stats.streamBytesOut.Add(int64(len(msg) - frame.Overhead))
	}
	ok := s.write(msg, 1, false)
	f.Done()
	return ok
}

// shutdown drops everything queued; the connection is closing (a graceful
// close waited for the queue to drain first, see Conn.Shutdown).
func (s *scheduler) shutdown() {
	s.mu.Lock()
	s.closing = true
	dropped := s.charged
	s.ctrl, s.ctrlN, s.calls, s.callBytes, s.charged, s.ready = nil, 0, nil, 0, 0, nil
	s.space.Broadcast()
	s.mu.Unlock()
	s.c.mem.give(dropped)
	s.kick()
}

// owed is the memory budget charge of the replies queued and being
// written, and of those being written; busy says whether a Write is under
// way (the write token is held). See stallCheck.
func (s *scheduler) owed() (all, writing int64, busy bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.charged + s.inflight, s.inflight, s.writing
}

// idle reports whether nothing is queued or being written.
func (s *scheduler) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.writing && len(s.ctrl) == 0 && len(s.calls) == 0 && len(s.ready) == 0
}

func (s *scheduler) run() {
	c := s.c
	defer c.loops.Done()
	for {
		s.mu.Lock()
		for s.writing || len(s.ctrl) == 0 && len(s.calls) == 0 && (len(s.ready) == 0 || s.closing) {
			if s.closing && !s.writing {
				s.mu.Unlock()
				return
			}
			writing := s.writing
			s.mu.Unlock()
			if writing {
				<-s.wake // the token holder kicks when it lets go
			} else {
				select {
				case <-s.wake:
				case <-c.done:
				}
			}
			s.mu.Lock()
		}
		if s.closing {
			s.mu.Unlock()
			return
		}
		s.writing = true
		batch, frames, replies := s.collectLocked(s.batch[:0])
		var st *streamcore.Stream
		if len(batch) == 0 {
			st = s.ready[0]
			copy(s.ready, s.ready[1:])
			s.ready[len(s.ready)-1] = nil
			s.ready = s.ready[:len(s.ready)-1]
		}
		s.mu.Unlock()

		var requeue *streamcore.Stream
		ok := true
		if st == nil {
			ok = s.write(batch, frames, replies)
		} else {
			f, more := st.PopFrame()
			ok = s.writeData(f)
			if more {
				requeue = st
			}
		}
		s.release(batch, requeue)
		if !ok {
			return
		}
	}
}

// collectLocked appends every queued control message and as many calls as
// fit a batch to b; it returns the batch, its frames, and whether replies
// (the messages charged to the budget, see queueReply) are among them.
//
// What the collected messages were charged to the memory budget is given
// back by release, once they are written: a batch blocked in Write toward a
// peer that reads nothing is memory held for it. A large message with
// nothing before it is written from its own buffer, not copied.
func (s *scheduler) collectLocked(b []byte) ([]byte, int, bool) {
	b = append(b, s.ctrl...)
	frames := s.ctrlN
	s.ctrl, s.ctrlN, s.pongQueued = s.ctrl[:0], 0, false
	if len(b) == 0 && len(s.calls) > 0 && len(s.calls[0].b) > maxBatch {
		b = s.calls[0].b
		s.popCallLocked()
		frames++
	}
	for len(s.calls) > 0 && (len(b) == 0 || len(b)+len(s.calls[0].b) <= maxBatch) {
		b = append(b, s.calls[0].b...)
		s.popCallLocked()
		frames++
	}
	if len(s.calls) == 0 {
		s.calls = nil // let a burst's backing array go
	}
	if frames > 0 {
		s.space.Broadcast()
	}
	return b, frames, s.inflight > 0 // inflight was 0: the token was free
}

// popCallLocked drops the first queued call, reply or message, counting
// its charge as in flight until release.
func (s *scheduler) popCallLocked() {
	m := s.calls[0]
	s.calls[0] = queuedMsg{}
	s.calls = s.calls[1:]
	s.callBytes -= len(m.b)
	s.charged -= m.cost
	s.inflight += m.cost
}

// write writes whole messages, replies among them or not. They are
// counted before the Write, so that a
// caller who got the reply to its call sees the call in Stats (the writer can
// be descheduled between the Write and the count while the reply arrives);
// after a failed Write the connection is closed, with the batch counted.
// Only the write token's holder writes, so msgEnd and msgFrames are stored
// by one goroutine at a time.
func (s *scheduler) write(b []byte, frames int, replies bool) bool {
	c := s.c
	nf := c.stats.framesOut.Add(int64(frames))
	nb := c.stats.bytesOut.Add(int64(len(b)))
	if replies { // where the last reply ends, for sockCheck
		c.stats.msgEnd.Store(nb)
		c.stats.msgFrames.Store(nf)
	}
	if err := s.writeNet(b); err != nil {
		c.closeWith(err)
		return false
	}
	return true
}
