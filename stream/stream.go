// Package stream is the bulk data stream of a virtrpc connection: a sender
// side (io.Writer, io.ReaderFrom, holes, Close that returns the receiver's
// verdict) and a receiver side (io.Reader, io.WriterTo that keeps holes when
// the destination can seek), with per-stream credit flow control.
//
// A Stream is opened by a call (rpc.Conn.OpenStream on the calling side,
// rpc.Request.Stream on the serving side) and carried by its connection,
// which implements Link. Streams follow libvirt's finish, abort and EOF rules
// exactly when the connection runs in compat mode.
//
// One goroutine may read and one may write a Stream at the same time; Close
// and CloseWithError may be called from any goroutine. Read and Write take
// no context: to bound a transfer, abort it from a timer or a context, for
// example context.AfterFunc(ctx, func() { st.CloseWithError(ctx.Err()) }).
//
// A stream carries data one way at a time, as libvirt's storage and
// migration streams do.
//
// Role, Link, Config, New, Frame, PopFrame, HandleFrame, AddCredit and Budget
// are the interface between a stream and its connection (package rpc); users
// of the library do not need them.
package stream

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/virtrpc/virtrpc/frame"
)

// Errors a Stream returns. A failure the peer reported arrives as a
// *frame.Error (use errors.As).
var (
	// ErrAborted: the peer aborted the stream without saying why
	// (libvirt's clients abort with an empty error).
	ErrAborted = errors.New("virtrpc: stream aborted by peer")
	// ErrClosed: the stream was closed locally.
	ErrClosed = fmt.Errorf("virtrpc: stream closed: %w", net.ErrClosed)
	// ErrNotSparse: a hole on a stream not opened as sparse.
	ErrNotSparse = errors.New("virtrpc: stream is not sparse")
	// ErrReceiverClosed is sent to the sender when the receiver closes
	// before the end of the data.
	ErrReceiverClosed = errors.New("virtrpc: receiver closed the stream before its end")
	// ErrIncomplete: the receiver's verdict counts fewer bytes consumed than
	// were sent (native mode).
	ErrIncomplete = errors.New("virtrpc: stream incomplete")
	// ErrPeerFinished: the peer finished its side of the stream (closed it
	// without sending data, or before ours arrived), so data written to it
	// would not be read. Close after sending data returns it, and the peer
	// is told.
	ErrPeerFinished = errors.New("virtrpc: the peer finished the stream without reading the data sent to it")
)

// Options are what a user chooses when opening a stream. A nil *Options
// means the zero value.
type Options struct {
	// Sparse allows holes (STREAM_HOLE frames) in both directions, as
	// libvirt's VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM flag does.
	Sparse bool
}

// Role selects the finish/abort rules of the protocol.
type Role int

const (
	// Native: both peers are virtrpc with flow control. Finish is STREAM/OK,
	// answered by the receiver's STREAM/OK or STREAM/ERROR.
	Native Role = iota
	// CompatClient: libvirt client rules (the local side opened the stream
	// with a call to a libvirt server).
	CompatClient
	// CompatServer: libvirtd's rules; a sender marks its end with an empty
	// STREAM/CONTINUE, then acknowledges the client's STREAM/OK.
	CompatServer
)

// Link is the connection under a Stream. rpc.Conn implements it.
type Link interface {
	// Schedule tells the write scheduler that s has frames for PopFrame.
	Schedule(s *Stream)
	// SendCredit grants the peer n more bytes on stream serial, ahead of
	// any queued data. direct allows writing it on the calling goroutine;
	// the read loop passes false and must never block on a write.
	SendCredit(serial uint32, n uint64, direct bool)
	// SendFrame queues a whole small message of the stream (an
	// acknowledgement or an abort) ahead of data; it is flushed even when the
	// connection is being closed.
	SendFrame(msg []byte)
	// Release tells the connection the stream is done; frames that arrive
	// for it later are dropped.
	Release(s *Stream)
}

// Config is what the connection decides for a stream.
type Config struct {
	Header      frame.Header // prog, vers, proc, serial of the opening call
	Role        Role
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
}

// Stream is one data stream. See the package documentation.
type Stream struct {
	link Link
	cfg  Config

	mu       sync.Mutex
	sendCond sync.Cond // queue space, credit, verdict, failure
	recvCond sync.Cond // data, EOF, failure; also compat back-pressure

	// send side
	outq      []outFrame
	scheduled bool
	held      bool
	credit    int64 // Native: bytes we may still send
	finSent   bool  // our finish (or receiver's ack) is queued
	sentAny   bool  // data or a hole was queued
	verdict   bool  // the peer answered our finish

	// receive side
	inq         []chunk
	cur         chunk // the reader's current chunk, owned by the reading goroutine
	inBytes     int
	maxIn       int // high-water mark of inBytes
	gotData     bool
	holesUnread int  // hole chunks queued or being read, not yet read whole
	eof         bool // the peer finished sending
	received    int64
	recvLimit   int64
	consumed    int64
	window      int64

	// lifecycle
	rerr     error // the peer's abort or error, or the connection's failure
	lerr     error // set once closed locally
	released bool

	sentBytes atomic.Int64
	recvBytes atomic.Int64
}

// New returns a stream on link. It is used by the connection; users get
// streams from rpc.
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
	s.credit = cfg.SendCredit
	s.window = cfg.RecvWindow
	s.recvLimit = cfg.RecvWindow
	return s
}

// Header returns the (prog, vers, proc, serial) of the call that opened the
// stream, with type STREAM.
func (s *Stream) Header() frame.Header {
	h := s.cfg.Header
	h.Type = frame.TypeStream
	return h
}

// Sparse reports whether the stream carries holes.
func (s *Stream) Sparse() bool { return s.cfg.Sparse }

// BytesSent is the number of data bytes handed to the connection so far.
func (s *Stream) BytesSent() int64 { return s.sentBytes.Load() }

// BytesReceived is the number of data bytes received so far (holes not
// counted).
func (s *Stream) BytesReceived() int64 { return s.recvBytes.Load() }

// Buffered is the number of received data bytes not yet read.
func (s *Stream) Buffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inBytes
}

// MaxBuffered is the most data the stream ever held unread. In native mode
// it never exceeds BufferLimit.
func (s *Stream) MaxBuffered() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxIn
}

// BufferLimit bounds the bytes in flight plus buffered unread (native
// mode): a paused reader never holds more.
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
// that opened the stream is queued.
func (s *Stream) Unhold() {
	s.mu.Lock()
	s.held = false
	sched := len(s.outq) > 0 && !s.scheduled
	if sched {
		s.scheduled = true
	}
	s.mu.Unlock()
	if sched {
		s.link.Schedule(s)
	}
}

// Fail ends the stream because its connection failed: every waiter returns
// err. Queued frames are dropped.
func (s *Stream) Fail(err error) {
	s.mu.Lock()
	if s.rerr == nil {
		s.rerr = err
	}
	s.dropQueueLocked()
	s.released = true
	s.sendCond.Broadcast()
	s.recvCond.Broadcast()
	s.mu.Unlock()
}

// release unregisters the stream once; call without s.mu held.
func (s *Stream) release() {
	s.mu.Lock()
	done := s.released
	s.released = true
	s.mu.Unlock()
	if !done {
		s.link.Release(s)
	}
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
