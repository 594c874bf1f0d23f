package rpc

import (
	"context"
	"fmt"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/frame/xdr"
)

// Procedure names a remote procedure: program, version and number.
type Procedure struct {
	Prog uint32
	Vers uint32
	Proc int32
}

func (p Procedure) String() string { return fmt.Sprintf("%#x/%d/%d", p.Prog, p.Vers, p.Proc) }

type reply struct {
	h       frame.Header
	payload []byte
}

// pendingCall is a call waiting for its reply. It stays registered after
// its caller gave up (ctx ended), so that the late reply is recognised and
// dropped rather than taken for a protocol violation.
type pendingCall struct {
	proc Procedure
	done chan callResult // buffered: finish never blocks, even after the caller left
	// late, if set, takes the outcome of a call its caller gave up on. It
	// is set under Conn.mu while the call is pending, and read by finish
	// after the call left the pending map under Conn.mu.
	late func(callResult)
	// onReply, if set, runs on the read loop with the reply before the
	// caller sees it and before the next message is read.
	onReply func(reply)
}

type callResult struct {
	reply reply
	err   error
}

// finish delivers the outcome; it runs once per call, as whoever removes
// the call from the pending map (the reply or the connection's close).
func (p *pendingCall) finish(r reply, err error) {
	if p.late != nil {
		p.late(callResult{r, err})
		return
	}
	p.done <- callResult{r, err}
}

// Call sends a CALL with the XDR-encoded args and returns the reply's
// payload. A failure reported by the peer is a *Error (errors.As). If ctx
// ends first, Call returns at once with ctx's error and the late reply is
// dropped.
func (c *Conn) Call(ctx context.Context, p Procedure, args []byte) ([]byte, error) {
	r, err := c.call(ctx, p, args, nil, nil)
	if err != nil {
		return nil, err
	}
	return r.payload, nil
}

// CallXDR is Call with arguments and reply encoded by the xdr package's
// reflection codec. args or reply may be nil for an empty payload.
func (c *Conn) CallXDR(ctx context.Context, p Procedure, args, replyTo any) error {
	var payload []byte
	if args != nil {
		var err error
		if payload, err = xdr.Marshal(args); err != nil {
			return fmt.Errorf("virtrpc: encoding arguments of %s: %w", p, err)
		}
	}
	out, err := c.Call(ctx, p, payload)
	if err != nil {
		return err
	}
	if replyTo == nil {
		if len(out) != 0 {
			return fmt.Errorf("virtrpc: reply of %s has %d unexpected bytes", p, len(out))
		}
		return nil
	}
	if err := xdr.Unmarshal(out, replyTo); err != nil {
		return fmt.Errorf("virtrpc: decoding reply of %s: %w", p, err)
	}
	return nil
}

// undoFunc undoes what a call's before hook set up, when the call failed or
// its caller gave up. accepted says the peer replied OK to a call its caller
// had given up on: the peer went ahead (for example opened its side of a
// stream) and must be told to stop.
type undoFunc func(accepted bool)

// call sends a call and waits for its reply; before, if not nil, runs once
// the serial is known and before the call is queued (to register a stream);
// its error ends the call before anything is sent.
func (c *Conn) call(ctx context.Context, p Procedure, args []byte, before func(serial uint32) (undoFunc, error), onReply func(reply)) (*reply, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if c.isServer && c.Mode() != ModeNative {
		return nil, fmt.Errorf("%w: a libvirt client serves no calls", ErrCompatMode)
	}
	if c.draining.Load() && c.Err() == nil {
		return nil, ErrShutdown
	}
	// In native mode a slot of the peer's MaxCalls is held until the
	// peer is done with the call: its reply, even a late one after ctx
	// ended, or the connection's end.
	var slot func()
	if semp := c.callSem.Load(); semp != nil {
		sem := *semp
		select {
		case sem <- struct{}{}:
			slot = func() { <-sem }
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, c.err
		}
	}
	defer func() {
		if slot != nil {
			slot()
		}
	}()
	if err := c.enc.Check(len(args)); err != nil {
		return nil, fmt.Errorf("virtrpc: arguments of %s: %w", p, err)
	}
	pc := &pendingCall{proc: p, done: make(chan callResult, 1), onReply: onReply}
	c.mu.Lock()
	if c.Err() != nil {
		c.mu.Unlock()
		return nil, c.err
	}
	serial := c.nextSerial
	c.nextSerial++
	if c.isServer {
		c.nextSerial |= frame.ServerSerialBit
	} else {
		c.nextSerial &^= frame.ServerSerialBit
	}
	c.pending[serial] = pc
	c.mu.Unlock()

	var undo undoFunc
	if before != nil {
		var err error
		if undo, err = before(serial); err != nil {
			c.forget(serial) // refused before anything was sent
			return nil, err
		}
	}
	h := frame.Header{Prog: p.Prog, Vers: p.Vers, Proc: p.Proc, Type: frame.TypeCall, Serial: serial}
	msg, _ := c.enc.Message(h, args) // checked above, before the serial was taken
	if err := c.sched.sendCall(ctx, msg, true); err != nil {
		c.forget(serial)
		if undo != nil {
			undo(false)
		}
		return nil, err
	}
	select {
	case res := <-pc.done:
		err := res.err
		if err == nil && res.reply.h.Status == frame.StatusError {
			err = decodeRemoteError(res.reply.payload)
		}
		if err != nil {
			if undo != nil {
				undo(false)
			}
			return nil, err
		}
		return &res.reply, nil
	case <-ctx.Done():
		if undo != nil || slot != nil {
			c.abandon(serial, pc, undo, slot)
			slot = nil // abandon frees it
		}
		return nil, ctx.Err()
	}
}

// abandon hands the outcome of a call whose caller gave up to the call's
// undo and frees its slot, once it comes. A stream opened by the call cannot
// be dropped at once: the peer's handler may not have opened its side yet,
// and an abort sent now would be dropped as a late frame, leaving the peer's
// side waiting. So the stream stays registered until the reply, and undo
// then aborts it. The slot is held until then because the peer still counts
// the call against its MaxConcurrentCalls.
func (c *Conn) abandon(serial uint32, pc *pendingCall, undo undoFunc, slot func()) {
	outcome := func(res callResult) {
		if undo != nil {
			undo(res.err == nil && res.reply.h.Status == frame.StatusOK)
		}
		if slot != nil {
			slot()
		}
	}
	c.mu.Lock()
	if c.pending[serial] == pc {
		pc.late = outcome
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	outcome(<-pc.done) // it was being delivered
}

func (c *Conn) forget(serial uint32) {
	c.mu.Lock()
	delete(c.pending, serial)
	c.mu.Unlock()
}

func decodeRemoteError(payload []byte) error {
	e, err := frame.DecodeError(payload)
	if err != nil {
		return err
	}
	if e.Domain == frame.DomainVirtrpc && e.Code == frame.CodeTooManyStreams {
		return &codedReply{e, ErrTooManyStreams}
	}
	return e
}

// codedReply is a peer's error reply that stands for one of our sentinels:
// errors.As finds the *Error, errors.Is the sentinel.
type codedReply struct {
	fe       *frame.Error
	sentinel error
}

func (e *codedReply) Error() string   { return e.fe.Error() }
func (e *codedReply) Unwrap() []error { return []error{e.fe, e.sentinel} }

// handleReply pairs a REPLY with its call. A reply nobody asked for is a
// protocol violation; the late reply of a cancelled call is dropped.
func (c *Conn) handleReply(h frame.Header, fr *frame.Reader) error {
	// The call stays pending until its reply is read whole: if the reply is
	// bad or cut short, the connection's close finishes the call with why.
	c.mu.Lock()
	pc, ok := c.pending[h.Serial]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("reply to serial %d, which has no call outstanding", h.Serial)
	}
	if pc.proc != (Procedure{h.Prog, h.Vers, h.Proc}) {
		return fmt.Errorf("reply for %s to the call of %s", Procedure{h.Prog, h.Vers, h.Proc}, pc.proc)
	}
	if h.Status != frame.StatusOK && h.Status != frame.StatusError {
		return fmt.Errorf("reply with status %s", h.Status)
	}
	payload, charged, err := c.readBody(fr, "reply")
	if err != nil {
		return err
	}
	c.mem.give(charged) // read whole: the caller's from here
	c.mu.Lock()
	if ok = c.pending[h.Serial] == pc; ok {
		delete(c.pending, h.Serial)
	}
	c.mu.Unlock()
	if ok { // else the connection closed meanwhile and finished it
		if pc.onReply != nil {
			pc.onReply(reply{h: h, payload: payload})
		}
		pc.finish(reply{h: h, payload: payload}, nil)
	}
	return nil
}

// Send sends a one-way MESSAGE with the given payload. It returns once the
// message is queued. In compat mode only the server may send messages.
func (c *Conn) Send(ctx context.Context, p Procedure, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !c.isServer && c.Mode() != ModeNative {
		return fmt.Errorf("%w: libvirt servers accept no MESSAGE from clients", ErrCompatMode)
	}
	if c.draining.Load() && c.Err() == nil {
		return ErrShutdown
	}
	msg, err := c.enc.Message(frame.Header{Prog: p.Prog, Vers: p.Vers, Proc: p.Proc, Type: frame.TypeMessage}, payload)
	if err != nil {
		return fmt.Errorf("virtrpc: message %s: %w", p, err)
	}
	return c.sched.sendCall(ctx, msg, true)
}
