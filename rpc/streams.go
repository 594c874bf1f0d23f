package rpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/frame/xdr"
	"github.com/virtrpc/virtrpc/internal/streamcore"
	"github.com/virtrpc/virtrpc/stream"
)

// ErrTooManyStreams: the connection has Options.MaxStreams streams open.
// When it is the peer that refused (its handler's Request.Stream failed so
// and the handler returned the error), the caller's error matches it too:
// it travels as a virtrpc code (frame.CodeTooManyStreams), and the error
// is still an *Error (errors.As).
var ErrTooManyStreams = errors.New("virtrpc: too many streams open on the connection")

// OpenStream calls p with args and opens a data stream on the call, going
// the declared direction (Upload: we write; Download: we read; Duplex:
// both). It returns once the peer's handler replied; its reply payload is
// returned too. ctx bounds the call only: to bound the transfer, use the
// stream's deadlines or CloseWithError (context.AfterFunc does it in one
// line). If ctx ends before the reply, OpenStream returns ctx's error, and
// when the reply comes the peer's side of the stream is aborted with
// ErrStreamAbandoned.
func (c *Conn) OpenStream(ctx context.Context, p Procedure, args []byte, dir stream.Direction, opts *stream.Options) (*stream.Stream, []byte, error) {
	var st *streamcore.Stream
	r, err := c.call(ctx, p, args, func(serial uint32) (undoFunc, error) {
		h := frame.Header{Prog: p.Prog, Vers: p.Vers, Proc: p.Proc, Serial: serial}
		var regErr error
		if st, regErr = c.newStream(h, dir, opts, false, nil); regErr != nil {
			return nil, regErr // no call goes out: the peer opens nothing
		}
		return func(accepted bool) {
			if st == nil {
				return
			}
			if accepted { // the peer's side is open: tell it to stop
				_ = st.CloseWithError(ErrStreamAbandoned)
			}
			st.Fail(errors.New("virtrpc: the call that opened the stream failed"))
			c.releaseStream(st)
		}, nil
	}, nil)
	if err != nil {
		return nil, nil, err
	}
	return publicStream(st), r.payload, nil
}

// OpenStreamXDR is OpenStream with arguments and reply encoded by the xdr
// package's reflection codec, as CallXDR. args or replyTo may be nil for
// an empty payload.
func (c *Conn) OpenStreamXDR(ctx context.Context, p Procedure, args any, dir stream.Direction, opts *stream.Options, replyTo any) (*stream.Stream, error) {
	var payload []byte
	if args != nil {
		var err error
		if payload, err = xdr.Marshal(args); err != nil {
			return nil, fmt.Errorf("virtrpc: encoding arguments of %s: %w", p, err)
		}
	}
	st, out, err := c.OpenStream(ctx, p, payload, dir, opts)
	if err != nil {
		return nil, err
	}
	switch {
	case replyTo == nil && len(out) != 0:
		err = fmt.Errorf("virtrpc: reply of %s has %d unexpected bytes", p, len(out))
	case replyTo != nil:
		if derr := xdr.Unmarshal(out, replyTo); derr != nil {
			err = fmt.Errorf("virtrpc: decoding reply of %s: %w", p, derr)
		}
	}
	if err != nil {
		_ = st.CloseWithError(err)
		return nil, err
	}
	return st, nil
}

// Stream opens the data stream of this call, going the direction the
// caller declared (Upload: this side reads; Download: this side writes;
// Duplex: both). Frames written to it wait until the reply has been sent,
// as libvirt orders them; so a handler either starts a goroutine that uses
// the stream and returns, or calls Reply first and then uses the stream
// itself. If the handler returns an error before replying, the stream is
// discarded. Beyond Options.MaxStreams open streams it fails, and so does
// the call if the handler returns the error.
func (r *Request) Stream(dir stream.Direction, opts *stream.Options) (*stream.Stream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replied {
		return nil, errors.New("virtrpc: Stream after the reply was sent")
	}
	if r.st != nil {
		return nil, errors.New("virtrpc: the call already has a stream")
	}
	var failed error
	if r.conn.takeEarly(r.Header.Serial) {
		failed = streamcore.ErrEarlyData
	}
	st, err := r.conn.newStream(r.Header, dir, opts, true, failed)
	if err != nil {
		return nil, err
	}
	r.st = st
	return publicStream(st), nil
}

func publicStream(st *streamcore.Stream) *stream.Stream {
	return streamcore.Wrap(st).(*stream.Stream)
}

// directions maps a declared direction to what this side does: the
// caller sends on an upload, the serving side on a download.
func directions(dir stream.Direction, serving bool) (send, recv bool, err error) {
	switch dir {
	case stream.Upload:
		return !serving, serving, nil
	case stream.Download:
		return serving, !serving, nil
	case stream.Duplex:
		return true, true, nil
	}
	return false, false, fmt.Errorf("virtrpc: stream direction %v is not Upload, Download or Duplex", dir)
}

func (c *Conn) newStream(h frame.Header, dir stream.Direction, opts *stream.Options, serving bool, failed error) (*streamcore.Stream, error) {
	var o stream.Options
	if opts != nil {
		o = *opts
	}
	send, recv, err := directions(dir, serving)
	if err != nil {
		return nil, err
	}
	cfg := streamcore.Config{
		Header:      frame.Header{Prog: h.Prog, Vers: h.Vers, Proc: h.Proc, Serial: h.Serial},
		Send:        send,
		Recv:        recv,
		Sparse:      o.Sparse,
		ChunkSize:   min(c.cfg.ChunkSize, frame.MaxCompatStreamPayload),
		CompatLimit: c.cfg.CompatStreamBuffer,
		Held:        serving,
		Failed:      failed,
	}
	switch {
	case c.Mode() == ModeNative:
		peer := c.peer.Load()
		cfg.Role = streamcore.Native
		cfg.ChunkSize = min(c.cfg.ChunkSize, int(peer.MaxStreamPayload))
		cfg.SendCredit = int64(peer.InitialWindow)
		cfg.RecvWindow = int64(c.cfg.StreamWindow)
		cfg.MaxWindow = int64(c.cfg.MaxStreamWindow)
		cfg.BufferLimit = int64(c.cfg.StreamBuffer)
		cfg.Budget = c.budget
		cfg.Target = c.bdp.streamWindow
	case serving:
		cfg.Role = streamcore.CompatServer
	default:
		cfg.Role = streamcore.CompatClient
	}
	if !recv {
		cfg.RecvWindow, cfg.MaxWindow, cfg.BufferLimit = 0, 0, 0 // a side that only sends grants nothing
	}
	st := streamcore.New(streamLink{c}, cfg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutting {
		return nil, c.err // set before shutting, under c.mu
	}
	if _, dup := c.streams[h.Serial]; dup {
		return nil, fmt.Errorf("virtrpc: a stream on serial %d is already open", h.Serial)
	}
	if len(c.streams) >= c.cfg.MaxStreams {
		return nil, fmt.Errorf("%w (limit %d)", ErrTooManyStreams, c.cfg.MaxStreams)
	}
	// A receiving stream holds what the peer sends before our reader takes
	// it: its initial window in native mode (growth beyond it draws on
	// ConnectionWindow), CompatStreamBuffer in compat mode. That is charged
	// to the connection's memory budget while the stream is open, so many
	// streams cannot add up past ConnectionMemory (and the server's).
	var charge int64
	if recv {
		charge = int64(c.cfg.CompatStreamBuffer)
		if cfg.Role == streamcore.Native {
			charge = cfg.RecvWindow
		}
	}
	if charge > 0 && !c.mem.take(charge) {
		return nil, c.budgetError("a receiving stream's buffer", charge)
	}
	if charge > 0 {
		c.streamMem[st] = charge
	}
	c.streams[h.Serial] = st
	c.stats.streamsOpened.Add(1)
	return st, nil
}

// streamLink is the connection as the streams see it.
type streamLink struct{ c *Conn }

func (l streamLink) Schedule(s *streamcore.Stream, direct bool) { l.c.sched.schedule(s, direct) }

func (l streamLink) SendCredit(serial uint32, n uint64, direct bool) {
	var b [frame.Overhead + frame.CreditPayloadSize]byte
	h := frame.Header{Prog: frame.ControlProgram, Vers: frame.ControlVersion, Proc: frame.ControlCredit, Type: frame.TypeMessage, Serial: serial}
	frame.PutHeader(b[:], h, frame.CreditPayloadSize)
	frame.PutCredit(b[frame.Overhead:], n)
	l.c.sched.sendControl(b[:], direct)
}

func (l streamLink) SendFrame(msg []byte) { l.c.sched.sendControl(msg, false) }

func (l streamLink) Release(s *streamcore.Stream) { l.c.releaseStream(s) }

func (c *Conn) releaseStream(s *streamcore.Stream) {
	serial := s.Header().Serial
	c.mu.Lock()
	if c.streams[serial] == s {
		delete(c.streams, serial)
	}
	if n, ok := c.streamMem[s]; ok {
		delete(c.streamMem, s)
		c.mem.give(n)
	}
	c.mu.Unlock()
	s.ReturnWindow()
}

// Calls being served, and whether stream frames came for one before its
// handler opened the stream: the frames were dropped, so the stream must
// fail rather than acknowledge data it never got.

func (c *Conn) servingCall(serial uint32) {
	c.mu.Lock()
	c.served[serial] = false
	c.mu.Unlock()
}

func (c *Conn) servedCall(serial uint32) {
	c.mu.Lock()
	delete(c.served, serial)
	c.mu.Unlock()
}

// noteEarly records a stream frame dropped for a call being served.
func (c *Conn) noteEarly(serial uint32) {
	c.mu.Lock()
	if _, ok := c.served[serial]; ok {
		c.served[serial] = true
	}
	c.mu.Unlock()
}

func (c *Conn) takeEarly(serial uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.served[serial]
}
