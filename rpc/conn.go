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
	"github.com/virtrpc/virtrpc/internal/streamcore"
)

// Conn is one virtrpc connection: either side calls, either side serves,
// and any number of streams share it. Create it with Client on the dialing
// side and Accept or Server on the accepting side (Serve does it for a
// listener); end it with Close, or Shutdown to drain first. All methods are
// safe for concurrent use.
type Conn struct {
	nc       net.Conn
	cfg      config
	enc      frame.Encoder // lays out and sizes every message this side sends
	isServer bool

	mode       atomic.Int32
	authed     atomic.Bool
	identity   atomic.Pointer[any]         // set by AuthenticateAs
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
	budget     *streamcore.Budget
	mem        *memBudget // what the peer can make us hold (budget.go)
	adm        *admission // its place in Serve's limits; nil outside Serve
	bdp        bdpEstimator
	helloRTT   time.Duration // set before the connection is shared
	msgs       *messageQueue
	handlerCtx context.Context
	cancel     context.CancelFunc

	mu         sync.Mutex
	nextSerial uint32
	pending    map[uint32]*pendingCall
	streams    map[uint32]*streamcore.Stream
	served     map[uint32]bool              // calls being served: did stream frames come before their stream? (see streams.go)
	streamMem  map[*streamcore.Stream]int64 // what each receiving stream charged to mem (streams.go)
	shutting   bool                         // shut has taken the streams: no more may register

	negotiated chan struct{} // closed once the mode is settled
	negOnce    sync.Once

	done      chan struct{}
	closeOnce sync.Once
	err       error          // why the connection closed; set before done is closed
	loops     sync.WaitGroup // the connection's own goroutines: read loop, writer, keepalive
	user      sync.WaitGroup // goroutines running user code: call handlers, the message queue
	running   atomic.Int32   // call handlers running
	draining  atomic.Bool    // Shutdown was called

	stats  statCounters
	sockIn func() (int64, bool) // the socket's receive queue (sockq_linux.go); nil if unknown
	sockq  func() (int64, bool) // the socket's send queue; nil if unknown
	acked  func() (int64, bool) // bytes the peer's TCP acknowledged; nil if unknown
}

// Client starts a connection on the dialing side of nc and, unless the
// options say CompatOnly, negotiates native mode with a HELLO call. If nc
// has a HandshakeContext method (a *tls.Conn) whose handshake has not run,
// it runs first. ctx bounds both. On failure nc is closed.
func Client(ctx context.Context, nc net.Conn, opts *Options) (*Conn, error) {
	if err := handshake(ctx, nc); err != nil {
		return nil, err
	}
	c := newConn(nc, opts, false)
	if c.cfg.Negotiation != CompatOnly {
		if err := c.hello(ctx); err != nil {
			c.closeWith(err)
			c.wait()
			return nil, err
		}
	}
	c.settle()
	return c, nil
}

// Server starts a connection on the accepting side of nc. It runs in compat
// mode until the peer's first call is a HELLO. It does not block: Negotiated
// tells when the mode is settled, and Accept waits for it. A *tls.Conn
// whose handshake has not run handshakes on the read loop, bounded only by
// keepalive; Accept and Serve bound it.
func Server(nc net.Conn, opts *Options) *Conn {
	return newConn(nc, opts, true)
}

// Accept starts a connection on the accepting side of nc, as Server does,
// and returns once the peer's first call has settled the mode (a HELLO
// makes it native; any other call leaves it compat), so Mode is final. If
// nc has a HandshakeContext method (a *tls.Conn), the handshake runs first.
// ctx bounds the handshake and the wait; on failure nc is closed and the
// error says why (the connection's *ClosedError, or ctx's error).
func Accept(ctx context.Context, nc net.Conn, opts *Options) (*Conn, error) {
	if err := handshake(ctx, nc); err != nil {
		return nil, err
	}
	c := Server(nc, opts)
	select {
	case <-c.negotiated:
		return c, nil
	case <-c.done:
		c.wait()
		return nil, c.err
	case <-ctx.Done():
		c.closeWith(ctx.Err())
		c.wait()
		return nil, ctx.Err()
	}
}

// handshake runs nc's TLS handshake, if it has one, bounded by ctx; on
// failure nc is closed.
func handshake(ctx context.Context, nc net.Conn) error {
	h, ok := nc.(interface{ HandshakeContext(context.Context) error })
	if !ok {
		return nil
	}
	if err := h.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			return fmt.Errorf("virtrpc: TLS handshake: %w (%w)", ctx.Err(), err)
		}
		return fmt.Errorf("virtrpc: TLS handshake: %w", err)
	}
	return nil
}

// Negotiated is closed once the connection's mode is settled, and Mode no
// longer changes: when Client returns on the dialing side, and once the
// peer's first call has been handled on the accepting side. It stays open
// if the connection closes first; select on Done as well.
func (c *Conn) Negotiated() <-chan struct{} { return c.negotiated }

func (c *Conn) settle() { c.negOnce.Do(func() { close(c.negotiated) }) }

func newConn(nc net.Conn, opts *Options, isServer bool) *Conn {
	return newConnIn(nc, opts, isServer, nil)
}

// newConnIn starts a connection within a Serve's limits (adm), if not nil.
func newConnIn(nc net.Conn, opts *Options, isServer bool, adm *admission) *Conn {
	c := &Conn{
		nc:       nc,
		cfg:      resolve(opts),
		isServer: isServer,
		pending:  make(map[uint32]*pendingCall),
		streams:  make(map[uint32]*streamcore.Stream),
		served:   make(map[uint32]bool),

		streamMem: make(map[*streamcore.Stream]int64),
		done:      make(chan struct{}),

		negotiated: make(chan struct{}),
	}
	c.enc = frame.Encoder{Max: c.cfg.MaxMessage}
	c.sockIn, c.sockq = socketQueues(nc)
	c.acked = socketAcked(nc)
	c.budget = streamcore.NewBudget(int64(c.cfg.ConnectionWindow))
	c.adm = adm
	var server *serverBudget
	if adm != nil {
		server = &adm.s.mem
	}
	c.mem = newMemBudget(int64(c.cfg.ConnectionMemory), connReserve, server)
	c.authed.Store(c.cfg.Auth == nil)
	c.handlerCtx, c.cancel = context.WithCancel(context.Background())
	c.sched.init(c)
	c.bdp.init(c)
	c.msgs = newMessageQueue(c)
	c.lastRecv.Store(time.Now().UnixNano())
	if isServer {
		c.nextSerial = frame.ServerSerialBit
	}
	var r io.Reader = nc
	if _, ok := nc.(*tls.Conn); !ok {
		r = bufio.NewReaderSize(nc, 64<<10) // TLS buffers a record already
	}
	fr := frame.NewReader(countingReader{r, &c.rxBytes}, &frame.ReaderOptions{MaxMessage: c.cfg.MaxMessage})
	c.loops.Add(2)
	c.user.Add(1)
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
func (c *Conn) Authenticate() {
	c.authed.Store(true)
	c.adm.authenticated() // Serve's MaxUnauthenticated place is free
}

// AuthenticateAs records who the peer is (for example a
// *sasl.Identity), then opens the auth gate as Authenticate does. Handlers
// read it back with Identity. The identity is recorded before the gate
// opens, so no handler past the gate sees it unset.
func (c *Conn) AuthenticateAs(identity any) {
	c.identity.Store(&identity)
	c.Authenticate()
}

// Identity returns what AuthenticateAs recorded, or nil.
func (c *Conn) Identity() any {
	if p := c.identity.Load(); p != nil {
		return *p
	}
	return nil
}

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

// readLoop reads every message and routes it; it never waits for user code
// (except a compat-mode stream's consumer, see streamcore.Stream.HandleFrame).
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
		// lastRecv before routing: keepalive, which loads them in the
		// other order, must not see the read loop idle with the time of
		// the message before a long pause (a compat stream's reader).
		c.lastRecv.Store(time.Now().UnixNano())
		c.routing.Store(false)
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
	return unauthTooLarge(h, frame.HeaderSize+n, c.cfg.MaxUnauthMessage)
}

// unauthTooLarge is apart so that h escapes only on this path: checked on
// every message, checkUnauthSize must not allocate.
func unauthTooLarge(h frame.Header, n, limit int) error {
	return &frame.ProtocolError{Header: &h, Err: fmt.Errorf("%w before authentication: %d > %d", frame.ErrFrameTooLarge, n, limit)}
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
			c.noteEarly(h.Serial) // before its handler opened the stream, or late for a finished one
			return fr.Discard()
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
