// Package streamcore is the implementation of package stream and its
// interface with the connection (package rpc): the frames a stream queues
// for the write scheduler, the frames the read loop hands it, credit, and
// the state machine of the finish, abort and EOF rules. Users see only
// package stream, whose Stream wraps a *Stream of this package.
package streamcore

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtrpc/virtrpc/frame"
)

// Role selects the finish/abort rules of the protocol.
type Role int

const (
	// Native: both peers are virtrpc with flow control. A sender's finish
	// is STREAM/OK with an empty payload, answered by the receiver's
	// STREAM/OK carrying the count of bytes it consumed (or STREAM/ERROR).
	Native Role = iota
	// CompatClient: libvirt client rules (the local side opened the stream
	// with a call to a libvirt server). The client's STREAM/OK finishes the
	// whole stream; the server answers it with STREAM/OK.
	CompatClient
	// CompatServer: libvirtd's rules; a sender marks its end with an empty
	// STREAM/CONTINUE, and every STREAM/OK of the client is answered with
	// STREAM/OK.
	CompatServer
)

// Link is the connection under a Stream (implemented by an unexported
// adapter in package rpc).
type Link interface {
	// Schedule tells the write scheduler that s has frames for PopFrame.
	// direct allows the calling goroutine to write them itself when the
	// socket is idle; a caller that must return when its ctx ends or its
	// deadline passes passes false, as a write to the socket is out of
	// their reach.
	Schedule(s *Stream, direct bool)
	// SendCredit grants the peer n more bytes on stream serial, ahead of
	// any queued data. direct allows writing it on the calling goroutine;
	// the read loop passes false and must never block on a write.
	SendCredit(serial uint32, n uint64, direct bool)
	// SendFrame queues a whole small message of the stream (an
	// acknowledgement, a verdict or an abort) ahead of data; it is flushed
	// even when the connection is being closed.
	SendFrame(msg []byte)
	// Release tells the connection the stream is done; frames that arrive
	// for it later are dropped.
	Release(s *Stream)
}

// Config is what the connection decides for a stream.
type Config struct {
	Header      frame.Header // prog, vers, proc, serial of the opening call
	Role        Role
	Send, Recv  bool // the directions this side uses: it sends, it receives, or both
	Sparse      bool
	ChunkSize   int   // largest data payload to send
	SendCredit  int64 // initial credit toward the peer (Native)
	RecvWindow  int64 // initial receive window, as advertised to the peer (Native)
	MaxWindow   int64 // receive window cap (Native)
	BufferLimit int64 // in-flight plus received-unread bytes (Native); at least 4 windows
	Budget      *Budget
	CompatLimit int          // receive bytes buffered before the read loop pauses (compat)
	Target      func() int64 // the window the connection's bandwidth probe wants
	Held        bool         // frames wait until Unhold (the reply must go first)
	Failed      error        // the stream starts failed: it is aborted toward the peer at once
}

// sendState is the state of the direction this side sends on.
type sendState uint8

const (
	sendNone     sendState = iota // this side does not send
	sendOpen                      // data may be written
	sendFinished                  // our finish is queued; the peer's verdict has not come
	sendDone                      // the peer acknowledged our finish
)

// recvState is the state of the direction this side receives on.
type recvState uint8

const (
	recvNone  recvState = iota // this side does not receive
	recvOpen                   // data may arrive
	recvEOF                    // the peer finished; data may still be unread
	recvAcked                  // we acknowledged the peer's finish
)

// Stream is one data stream; package stream documents its behaviour.
type Stream struct {
	link Link
	cfg  Config

	mu       sync.Mutex
	sendCond sync.Cond // queue space, credit, verdict, failure, write deadline
	recvCond sync.Cond // data, EOF, failure, read deadline; also compat back-pressure

	send sendState
	recv recvState

	// Terminal conditions. rerr: the peer aborted or failed, or the
	// connection did. aborted: we aborted (CloseWithError, an expired
	// Finish, an early receiver Close). closed: the user closed the stream;
	// local reads and writes fail.
	rerr       error
	aborted    error
	closed     bool
	verdictErr error // the peer's verdict on our direction counts less than we sent (native)
	finishing  bool  // a Finish is waiting for the verdict
	discard    bool  // the local reader is gone (net.Conn Close): data is dropped, the peer's finish acknowledged at once
	okSent     bool  // CompatClient: our STREAM/OK (the finish of the whole stream) is queued
	finOut     bool  // our finish was handed to the writer (PopFrame): an abort can no longer replace it
	released   bool

	// send side
	outq      []outFrame
	scheduled bool
	held      bool
	credit    int64 // Native: bytes we may still send

	// receive side
	inq         []chunk
	cur         chunk // the reader's current chunk, owned by the reading goroutine
	inBytes     int
	maxIn       int // high-water mark of inBytes
	holesUnread int // hole chunks queued or being read, not yet read whole
	received    int64
	recvLimit   int64
	consumed    int64
	dropped     int64 // received after the reader left, not consumed
	window      int64

	// deadlines (net.Conn); zero means none
	rdl, wdl       time.Time
	rtimer, wtimer *time.Timer

	sentBytes atomic.Int64
	recvBytes atomic.Int64
}

// New returns a stream on link; the connection calls it.
func New(link Link, cfg Config) *Stream {
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = frame.AlignedStreamPayload
	}
	if cfg.CompatLimit <= 0 {
		cfg.CompatLimit = 4 << 20
	}
	s := &Stream{link: link, cfg: cfg, held: cfg.Held}
	s.sendCond.L = &s.mu
	s.recvCond.L = &s.mu
	if cfg.Send {
		s.send = sendOpen
	}
	if cfg.Recv {
		s.recv = recvOpen
	}
	s.credit = cfg.SendCredit
	s.window = cfg.RecvWindow
	s.recvLimit = cfg.RecvWindow
	s.rerr = cfg.Failed
	return s
}

// Wrap makes the public stream.Stream for a core stream. Package stream
// sets it when it is initialised; package rpc calls it.
var Wrap func(*Stream) any

// Header returns the (prog, vers, proc, serial) of the call that opened the
// stream, with type STREAM.
func (s *Stream) Header() frame.Header {
	h := s.cfg.Header
	h.Type = frame.TypeStream
	return h
}

// Sparse reports whether the stream carries holes.
func (s *Stream) Sparse() bool { return s.cfg.Sparse }

// Sends and Receives report the directions this side uses.
func (s *Stream) Sends() bool    { return s.cfg.Send }
func (s *Stream) Receives() bool { return s.cfg.Recv }

// BytesSent is the number of data bytes handed to the connection so far.
func (s *Stream) BytesSent() int64 { return s.sentBytes.Load() }

// BytesReceived is the number of data bytes received so far.
func (s *Stream) BytesReceived() int64 { return s.recvBytes.Load() }

// Buffered is the number of received data bytes not yet read.
func (s *Stream) Buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inBytes
}

// MaxBuffered is the most data the stream ever held unread.
func (s *Stream) MaxBuffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxIn
}

// BufferLimit bounds the bytes in flight plus buffered unread (native).
func (s *Stream) BufferLimit() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bufLimit()
}

// Window is the current receive window (native mode).
func (s *Stream) Window() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.window
}

// Unhold lets queued frames go out: the connection calls it once the reply
// that opened the stream is queued. A stream configured as Failed is
// aborted toward the peer now, behind the reply.
func (s *Stream) Unhold() {
	s.mu.Lock()
	s.held = false
	sched := len(s.outq) > 0 && !s.scheduled
	if sched {
		s.scheduled = true
	}
	s.mu.Unlock()
	if sched {
		s.link.Schedule(s, false)
	}
	if s.cfg.Failed != nil {
		s.sendOOB(frame.StatusError, encodeAbort(s.cfg.Failed))
		s.release()
	}
}

// Fail ends the stream because its connection failed (or the call that
// opened it did): every waiter returns err. Queued frames are dropped.
func (s *Stream) Fail(err error) {
	s.mu.Lock()
	if s.rerr == nil {
		s.rerr = err
	}
	s.dropQueueLocked()
	s.released = true
	s.wakeLocked()
	s.mu.Unlock()
}

// release unregisters the stream once; call without s.mu held.
func (s *Stream) release() {
	s.mu.Lock()
	done := s.released
	s.released = true
	s.stopTimersLocked()
	s.mu.Unlock()
	if !done {
		s.link.Release(s)
	}
}

func (s *Stream) wakeLocked() {
	s.sendCond.Broadcast()
	s.recvCond.Broadcast()
}

// Budget bounds the receive windows of all streams of a connection above
// their initial size.
type Budget struct{ left atomic.Int64 }

// NewBudget returns a budget of n bytes.
func NewBudget(n int64) *Budget {
	b := new(Budget)
	b.left.Store(n)
	return b
}

func (b *Budget) take(n int64) bool {
	if b == nil {
		return true
	}
	if b.left.Add(-n) < 0 {
		b.left.Add(n)
		return false
	}
	return true
}

func (b *Budget) give(n int64) {
	if b != nil && n > 0 {
		b.left.Add(n)
	}
}
