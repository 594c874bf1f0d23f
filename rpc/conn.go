package rpc

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/stream"
	"github.com/virtrpc/virtrpc/transport"
)

// Conn is one virtrpc connection: either side calls, either side serves,
// and any number of streams share it. Create it with Client on the dialing
// side and Server on the accepting side. All methods are safe for concurrent
// use.
type Conn struct {
	nc       net.Conn
	cfg      config
	isServer bool

	mode       atomic.Int32
	authed     atomic.Bool
	peer       atomic.Pointer[frame.Hello] // native: what the peer announced
	rttNanos   atomic.Int64
	lastRecv   atomic.Int64 // unix nanos of the last message received
	routing    atomic.Bool  // the read loop is handling a message, not waiting for one
	rxBytes    atomic.Int64 // bytes the frame reader took from nc (countingReader)
	msgEnd     atomic.Int64 // rxBytes once the message being read is in
	firstCall  atomic.Bool  // the peer's first call has been seen
	sched      scheduler
	callSem    atomic.Pointer[chan struct{}] // native: the peer's MaxCalls
	serving    atomic.Int32
	budget     *stream.Budget
	mem        *memBudget // what the peer can make us hold (budget.go)
	bdp        bdpEstimator
	helloRTT   time.Duration // set before the connection is shared
	msgs       *messageQueue
	handlerCtx context.Context
	cancel     context.CancelFunc

	mu         sync.Mutex
	nextSerial uint32
	pending    map[uint32]*pendingCall
	streams    map[uint32]*stream.Stream

	done      chan struct{}
	closeOnce sync.Once
	err       error // why the connection closed; set before done is closed
	loops     sync.WaitGroup
	handlers  sync.WaitGroup

	stats statCounters
}

// Client starts a connection on the dialing side of nc and, unless the
// options say CompatOnly, negotiates native mode with a HELLO call bounded by
// ctx. On failure nc is closed.
func Client(ctx context.Context, nc net.Conn, opts *Options) (*Conn, error) {
	c := newConn(nc, opts, false)
	if c.cfg.Negotiation == CompatOnly {
		return c, nil
	}
	if err := c.hello(ctx); err != nil {
		c.closeWith(err)
		return nil, err
	}
	return c, nil
}

// Server starts a connection on the accepting side of nc. It runs in compat
// mode until the peer's first call is a HELLO. It does not block.
func Server(nc net.Conn, opts *Options) *Conn {
	return newConn(nc, opts, true)
}

func newConn(nc net.Conn, opts *Options, isServer bool) *Conn {
	c := &Conn{
		nc:       nc,
		cfg:      resolve(opts),
		isServer: isServer,
		pending:  make(map[uint32]*pendingCall),
		streams:  make(map[uint32]*stream.Stream),
		done:     make(chan struct{}),
	}
	c.budget = stream.NewBudget(int64(c.cfg.ConnectionWindow))
	c.mem = newMemBudget(int64(c.cfg.ConnectionMemory), connReserve, nil)
	c.authed.Store(c.cfg.Auth == nil)
	c.handlerCtx, c.cancel = context.WithCancel(context.Background())
	c.sched.init(c)
	c.bdp.init(c)
	c.msgs = newMessageQueue(c)
	c.lastRecv.Store(time.Now().UnixNano())
	if isServer {
		c.nextSerial = frame.ServerSerialBit
	}
	if c.cfg.NotSentLowat > 0 {
		_ = transport.SetNotSentLowat(nc, c.cfg.NotSentLowat) // not TCP: nothing to do
	}
	var r io.Reader = nc
	if _, ok := nc.(*tls.Conn); !ok {
		r = bufio.NewReaderSize(nc, 64<<10) // TLS buffers a record already
	}
	fr := frame.NewReader(countingReader{r, &c.rxBytes}, &frame.ReaderOptions{MaxMessage: c.cfg.MaxMessage})
	c.loops.Add(3)
	go c.readLoop(fr)
	go c.sched.run()
	go c.msgs.run()
	if c.cfg.KeepaliveInterval > 0 || c.cfg.MessageTimeout > 0 {
		c.loops.Add(1)
		go c.keepalive()
	}
	return c
}

// Mode reports compat or native mode.
func (c *Conn) Mode() Mode { return Mode(c.mode.Load()) }

// IsServer reports whether this is the accepting side.
func (c *Conn) IsServer() bool { return c.isServer }

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Authenticate opens the auth gate: every procedure is dispatched from now on.
func (c *Conn) Authenticate() { c.authed.Store(true) }

// Authenticated reports whether the auth gate is open.
func (c *Conn) Authenticated() bool { return c.authed.Load() }

// Done is closed when the connection has closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed (a *ClosedError), or nil while open.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Close closes the connection: queued calls, replies and messages are
// flushed for up to a second, then every waiter is unblocked with a
// *ClosedError and handlers' contexts are cancelled. Close waits for the
// connection's goroutines and running handlers to end, so a handler of this
// connection that wants it closed must not wait for Close: it calls
// go req.Conn().Close() and returns.
func (c *Conn) Close() error {
	c.closeWith(errLocalClose)
	c.wait()
	return nil
}

// wait blocks until all goroutines of the connection have ended.
func (c *Conn) wait() {
	c.loops.Wait()
	c.handlers.Wait()
}

// closeWith shuts the connection down once, recording cause; it does not
// wait for goroutines (it may run on one of them).
func (c *Conn) closeWith(cause error) {
	c.closeOnce.Do(func() {
		c.err = &ClosedError{Cause: cause}
		if cause != errLocalClose {
			c.cfg.log.Debug("virtrpc: connection closing", "cause", cause)
		}
		graceful := cause == errLocalClose
		c.sched.shutdown(graceful)
		close(c.done)
		c.cancel()
		if !graceful {
			_ = c.nc.Close()
		}
		c.mu.Lock()
		pend := c.pending
		c.pending = map[uint32]*pendingCall{}
		sts := c.streams
		c.streams = map[uint32]*stream.Stream{}
		c.mu.Unlock()
		for _, p := range pend {
			p.finish(reply{}, c.err)
		}
		for _, s := range sts {
			s.Fail(c.err)
		}
		c.msgs.close()
	})
}

// readLoop reads every message and routes it; it never waits for user code
// (except a compat-mode stream's consumer, see stream.HandleFrame).
func (c *Conn) readLoop(fr *frame.Reader) {
	defer c.loops.Done()
	for {
		h, n, err := fr.Next()
		if err != nil {
			c.readFailed(err)
			return
		}
		c.stats.framesIn.Add(1)
		c.stats.bytesIn.Add(int64(frame.Overhead + n))
		c.msgEnd.Store(c.rxBytes.Load() + int64(n)) // the watchdog times the body
		c.routing.Store(true)                       // keepalive does not count time spent here as the peer's silence
		if err = c.checkUnauthSize(h, n); err == nil {
			err = c.route(h, fr)
		}
		c.routing.Store(false)
		c.lastRecv.Store(time.Now().UnixNano())
		if err != nil {
			var pe *frame.ProtocolError
			if !errors.As(err, &pe) {
				hh := h
				err = &frame.ProtocolError{Header: &hh, Err: err}
			}
			c.cfg.log.Error("virtrpc: closing connection", "err", err)
			c.closeWith(err)
			return
		}
	}
}

// checkUnauthSize refuses a large message before the auth gate opens,
// before its body is read: an anonymous peer gets small messages only.
// Checked after the header, not by the frame reader's limit, so a client
// that sends a large call right after its last auth step's reply is not
// refused for a limit the read loop armed before Authenticate ran.
func (c *Conn) checkUnauthSize(h frame.Header, n int) error {
	if c.cfg.Auth == nil || frame.HeaderSize+n <= c.cfg.MaxUnauthMessage || c.authed.Load() {
		return nil
	}
	return &frame.ProtocolError{Header: &h, Err: fmt.Errorf("%w before authentication: %d > %d", frame.ErrFrameTooLarge, frame.HeaderSize+n, c.cfg.MaxUnauthMessage)}
}

func (c *Conn) readFailed(err error) {
	select {
	case <-c.done:
		return // we closed it
	default:
	}
	if errors.Is(err, io.EOF) {
		err = ErrPeerClosed
	}
	c.closeWith(err)
}

// route handles one message whose payload is still unread in fr.
func (c *Conn) route(h frame.Header, fr *frame.Reader) error {
	switch h.Type {
	case frame.TypeCall:
		return c.handleCall(h, fr)
	case frame.TypeReply:
		return c.handleReply(h, fr)
	case frame.TypeMessage:
		return c.handleMessage(h, fr)
	case frame.TypeStream, frame.TypeStreamHole:
		c.mu.Lock()
		s := c.streams[h.Serial]
		c.mu.Unlock()
		if s == nil || !sameCall(s.Header(), h) {
			return fr.Discard() // late frame for a finished stream
		}
		if h.Type == frame.TypeStream && h.Status == frame.StatusContinue {
			n := int64(fr.Remaining())
			c.stats.streamBytesIn.Add(n)
			if c.Mode() == ModeNative {
				c.bdp.dataReceived(h.Serial, n)
			}
		}
		return s.HandleFrame(h, fr)
	case frame.TypeCallWithFDs, frame.TypeReplyWithFDs:
		return errors.New("file descriptor passing is not supported")
	}
	return errors.New("unknown message type")
}

func sameCall(a, b frame.Header) bool {
	return a.Prog == b.Prog && a.Vers == b.Vers && a.Proc == b.Proc && a.Serial == b.Serial
}

// RTT is the connection's smoothed round-trip estimate, from HELLO and
// keepalive pings; zero until one was measured.
func (c *Conn) RTT() time.Duration { return time.Duration(c.rttNanos.Load()) }

// noteRTT folds a sample in. The read loop (pongs) and Client's HELLO call
// it; the rare lost update between the two only drops one sample.
func (c *Conn) noteRTT(d time.Duration) {
	if d <= 0 {
		return
	}
	if old := c.rttNanos.Load(); old != 0 {
		d = (7*time.Duration(old) + d) / 8
	}
	c.rttNanos.Store(int64(d))
}
