package rpc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/internal/streamcore"
)

// Handler serves one call. It returns the reply's XDR payload, or an error
// that the caller receives as a *Error (pass a *Error to choose its code;
// any other error is sent as an internal error with its text). ctx is
// cancelled when the connection closes.
type Handler func(ctx context.Context, req *Request) ([]byte, error)

// MessageHandler receives one MESSAGE. Messages of a connection are
// delivered in order, one at a time.
type MessageHandler func(ctx context.Context, msg *Message)

// Mux maps procedures to handlers. Register before connections use it.
type Mux struct {
	mu       sync.RWMutex
	calls    map[Procedure]Handler
	messages map[Procedure]MessageHandler
	fallback MessageHandler
}

// NewMux returns an empty Mux.
func NewMux() *Mux {
	return &Mux{calls: map[Procedure]Handler{}, messages: map[Procedure]MessageHandler{}}
}

// Handle registers h for calls of p.
func (m *Mux) Handle(p Procedure, h Handler) {
	m.mu.Lock()
	m.calls[p] = h
	m.mu.Unlock()
}

// HandleMessage registers h for messages of p.
func (m *Mux) HandleMessage(p Procedure, h MessageHandler) {
	m.mu.Lock()
	m.messages[p] = h
	m.mu.Unlock()
}

// HandleOtherMessages registers h for messages no other handler takes.
func (m *Mux) HandleOtherMessages(h MessageHandler) {
	m.mu.Lock()
	m.fallback = h
	m.mu.Unlock()
}

func (m *Mux) call(p Procedure) Handler {
	if m == nil {
		return nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.calls[p]
}

func (m *Mux) message(p Procedure) MessageHandler {
	if m == nil {
		return nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if h := m.messages[p]; h != nil {
		return h
	}
	return m.fallback
}

// Request is one call being served.
type Request struct {
	Header  frame.Header
	Payload []byte

	conn    *Conn
	charged int64 // Payload's bytes in the connection's memory budget
	mu      sync.Mutex
	st      *streamcore.Stream
	replied bool
	unslot  sync.Once // frees the call's MaxConcurrentCalls slot
}

// freeSlot frees the call's slot once. It runs as the reply is queued,
// under the write queue's lock (see reply), not before: a call's slot
// bounds its goroutine and its reply until the reply is in the queue and
// charged to the budget, and the peer, which frees its slot of our
// MaxCalls when the reply arrives, cannot see the reply before that.
func (r *Request) freeSlot() { r.unslot.Do(func() { r.conn.serving.Add(-1) }) }

// Procedure is the called procedure.
func (r *Request) Procedure() Procedure {
	return Procedure{r.Header.Prog, r.Header.Vers, r.Header.Proc}
}

// Conn is the connection the call came on.
func (r *Request) Conn() *Conn { return r.conn }

// Message is one received MESSAGE.
type Message struct {
	Header  frame.Header
	Payload []byte
	Conn    *Conn

	charged int64 // Payload's bytes in the connection's memory budget
}

// handleCall dispatches a CALL to its handler on a new goroutine, or
// answers it at once (HELLO, auth gate, unknown procedure, over the bound).
func (c *Conn) handleCall(h frame.Header, fr *frame.Reader) error {
	payload, charged, err := c.readBody(fr, "call")
	if errors.Is(err, ErrMemoryBudget) { // the call fails, the connection goes on
		if err := fr.Discard(); err != nil {
			return err
		}
		return c.replyError(h, rpcError(frame.CodeRPC, "%v", err), false)
	}
	if err != nil {
		return err
	}
	dispatched := false
	defer func() {
		if !dispatched {
			c.mem.give(charged)
		}
	}()
	first := !c.firstCall.Swap(true)
	if h.Prog == frame.ControlProgram {
		err := c.serveControl(h, payload, first)
		if first && err == nil {
			c.settle() // native if the HELLO was accepted, compat otherwise
		}
		return err
	}
	// By mode, not by first call: after a HELLO we refused, the peer may go
	// on in compat mode, which RequireNative must not serve either.
	if c.isServer && c.cfg.Negotiation == RequireNative && c.Mode() != ModeNative {
		return fmt.Errorf("%w: the peer's call is not in native mode (no accepted HELLO)", ErrNativeRefused)
	}
	if first {
		c.settle() // a libvirt client: compat for good
	}
	if !c.isServer && c.Mode() != ModeNative {
		return errors.New("call from a server in compat mode")
	}
	p := Procedure{h.Prog, h.Vers, h.Proc}
	if c.draining.Load() {
		c.replyError(h, rpcError(frame.CodeRPC, "connection shutting down"), false)
		return nil
	}
	if !c.authed.Load() && !c.cfg.Auth.allows(p) {
		return c.replyError(h, rpcError(frame.CodeRPC, "authentication required"), false)
	}
	handler := c.cfg.Handlers.call(p)
	if handler == nil {
		return c.replyError(h, rpcError(frame.CodeRPC, "unknown procedure %d in program %#x version %d", h.Proc, h.Prog, h.Vers), false)
	}
	if int(c.serving.Add(1)) > c.cfg.MaxConcurrentCalls {
		c.serving.Add(-1)
		return c.replyError(h, rpcError(frame.CodeRPC, "too many concurrent calls (limit %d)", c.cfg.MaxConcurrentCalls), false)
	}
	req := &Request{Header: h, Payload: payload, conn: c, charged: charged}
	dispatched = true
	c.servingCall(h.Serial)
	c.user.Add(1)
	c.running.Add(1)
	go c.serve(handler, req)
	return nil
}

func (g *AuthGate) allows(p Procedure) bool {
	if g == nil {
		return true
	}
	for _, q := range g.Procedures {
		if q == p {
			return true
		}
	}
	return false
}

func (c *Conn) serve(handler Handler, req *Request) {
	returned := false
	defer func() {
		if !returned { // runtime.Goexit in the handler (t.FailNow, say)
			c.mem.give(req.charged)
			req.finish(nil, rpcError(frame.CodeInternalError, "handler exited without returning"))
		}
		req.freeSlot() // if the reply was not queued
		c.running.Add(-1)
		c.user.Done()
	}()
	out, err := runHandler(c.handlerCtx, handler, req)
	returned = true
	c.mem.give(req.charged) // the payload is the handler's now; the reply is charged instead
	req.finish(out, err)
}

// runHandler turns a handler's panic into an error reply: one bad handler
// must not take down the process's other connections.
func runHandler(ctx context.Context, h Handler, req *Request) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = rpcError(frame.CodeInternalError, "handler panic: %v", r)
		}
	}()
	return h(ctx, req)
}

// Reply sends the reply now, before the handler returns, so a handler can
// go on to move the stream it opened with Stream. The handler's own return
// value is then ignored, except that an error aborts the stream.
func (r *Request) Reply(payload []byte) error {
	r.mu.Lock()
	if r.replied {
		r.mu.Unlock()
		return errors.New("virtrpc: reply already sent")
	}
	r.replied = true
	st := r.st
	r.mu.Unlock()
	r.conn.servedCall(r.Header.Serial)
	err := r.conn.reply(r.Header, payload, true, r.freeSlot)
	r.freeSlot() // if it failed
	if st != nil {
		if err != nil {
			st.Fail(err)
			r.conn.releaseStream(st)
		} else {
			st.Unhold()
		}
	}
	return err
}

func (r *Request) finish(out []byte, err error) {
	r.mu.Lock()
	replied, st := r.replied, r.st
	r.replied = true
	r.mu.Unlock()
	r.conn.servedCall(r.Header.Serial)
	if replied {
		if err != nil && st != nil {
			_ = st.CloseWithError(err)
		}
		return
	}
	if err != nil {
		if st != nil {
			st.Fail(err)
			r.conn.releaseStream(st)
		}
		_ = r.conn.replyErrorThen(r.Header, toRemote(err), true, r.freeSlot)
		return
	}
	if rerr := r.conn.reply(r.Header, out, true, r.freeSlot); rerr != nil && st != nil {
		st.Fail(rerr)
		r.conn.releaseStream(st)
		return
	}
	if st != nil {
		st.Unhold()
	}
}

func toRemote(err error) *frame.Error {
	var fe *frame.Error
	if errors.As(err, &fe) {
		return fe
	}
	if errors.Is(err, ErrTooManyStreams) { // a code, so the caller's errors.Is matches it
		fe = rpcError(frame.CodeTooManyStreams, "%s", err.Error())
		fe.Domain = frame.DomainVirtrpc
		return fe
	}
	return rpcError(frame.CodeInternalError, "%s", err.Error())
}

// reply queues a reply charged to the memory budget, running queued (if
// not nil) under the write queue's lock once it is in; direct is false on
// the read loop (see sendCall). A reply over the budget is replaced by an
// error reply that says so: the call fails, memory does not grow.
func (c *Conn) reply(h frame.Header, payload []byte, direct bool, queued func()) error {
	if err := c.enc.Check(len(payload)); err != nil {
		_ = c.replyErrorThen(h, rpcError(frame.CodeInternalError, "reply of %d bytes over the message limit", len(payload)), direct, queued)
		return err
	}
	n := queuedCost(frame.Overhead + len(payload))
	if !c.mem.take(n) {
		err := c.budgetError("reply", n)
		_ = c.replyErrorThen(h, rpcError(frame.CodeRPC, "%v (the caller reads its replies too slowly?)", err), direct, queued)
		return err
	}
	msg, _ := c.enc.Reply(h, payload) // checked above, before the budget was charged
	// A large reply goes to the writer goroutine: its handler's goroutine
	// (and the call's payload on its stack) does not wait on a peer that
	// may never read.
	return c.sched.queueReply(msg, direct && len(msg) <= maxBatch, queued)
}

// replyError queues an error reply from the read loop.
func (c *Conn) replyError(h frame.Header, e *frame.Error, direct bool) error {
	return c.replyErrorThen(h, e, direct, nil)
}

// replyErrorThen queues an error reply charged to the memory budget. One
// that does not fit means the peer lets replies pile up without reading
// them: the connection closes, as nothing smaller can be sent.
func (c *Conn) replyErrorThen(h frame.Header, e *frame.Error, direct bool, queued func()) error {
	msg := c.enc.ErrorReply(h, e) // always fits a message
	if !c.mem.takeError(queuedCost(len(msg))) {
		err := fmt.Errorf("%w: the peer lets replies pile up unread", c.budgetError("error reply", int64(len(msg))))
		c.closeWith(err)
		return err
	}
	_ = c.sched.queueReply(msg, direct, queued) // fails only once closing: its error is recorded
	return nil
}

// handleMessage answers keepalive, applies credit, and queues the rest for
// the message handlers.
func (c *Conn) handleMessage(h frame.Header, fr *frame.Reader) error {
	switch h.Prog {
	case frame.KeepaliveProgram:
		if err := fr.Discard(); err != nil {
			return err
		}
		switch h.Proc {
		case frame.KeepalivePing:
			c.sendKeepalive(frame.KeepalivePong, false)
		case frame.KeepalivePong:
			c.gotPong()
		}
		return nil
	case frame.ControlProgram:
		if h.Proc != frame.ControlCredit || c.Mode() != ModeNative {
			return errors.New("unexpected control message")
		}
		var b [frame.CreditPayloadSize]byte
		if fr.Remaining() != len(b) {
			return errors.New("credit payload of wrong size")
		}
		if err := fr.ReadFull(b[:]); err != nil {
			return err
		}
		n, _ := frame.ParseCredit(b[:])
		c.mu.Lock()
		s := c.streams[h.Serial]
		c.mu.Unlock()
		if s != nil {
			return s.AddCredit(n)
		}
		return nil
	}
	payload, charged, err := c.readBody(fr, "message")
	if err != nil {
		return err
	}
	if !c.mem.take(messageCost) { // what a queued message holds besides its payload
		c.mem.give(charged)
		return c.budgetError("message", messageCost)
	}
	charged += messageCost
	if c.isServer && c.Mode() != ModeNative {
		c.mem.give(charged)
		return errors.New("MESSAGE from a client in compat mode")
	}
	if !c.authed.Load() {
		c.mem.give(charged)
		c.cfg.log.Debug("virtrpc: dropping message before authentication", "header", h)
		return nil
	}
	c.msgs.push(&Message{Header: h, Payload: payload, Conn: c, charged: charged}) // charged until handled
	return nil
}
