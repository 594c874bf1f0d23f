package rpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/virtrpc/virtrpc/frame"
	"github.com/virtrpc/virtrpc/stream"
)

// OpenStream calls p with args and opens a data stream on the call, in
// either direction: write to it to upload, read from it to download. It
// returns once the peer's handler replied; its reply payload is returned too.
// ctx bounds the call only: to bound the transfer, close the stream with
// CloseWithError (context.AfterFunc does it in one line). If ctx ends before
// the reply, OpenStream returns ctx's error, and when the reply comes the
// peer's side of the stream is aborted with ErrStreamAbandoned's text.
func (c *Conn) OpenStream(ctx context.Context, p Procedure, args []byte, opts *stream.Options) (*stream.Stream, []byte, error) {
	var st *stream.Stream
	var regErr error
	r, err := c.call(ctx, p, args, func(serial uint32) undoFunc {
		h := frame.Header{Prog: p.Prog, Vers: p.Vers, Proc: p.Proc, Serial: serial}
		st, regErr = c.newStream(h, opts, false)
		return func(accepted bool) {
			if st == nil {
				return
			}
			if accepted { // the peer's side is open: tell it to stop
				_ = st.CloseWithError(ErrStreamAbandoned)
			}
			st.Fail(errors.New("virtrpc: the call that opened the stream failed"))
			c.Release(st)
		}
	}, nil)
	if regErr != nil {
		return nil, nil, regErr
	}
	if err != nil {
		return nil, nil, err
	}
	return st, r.payload, nil
}

// Stream opens the data stream of this call. Frames written to it wait
// until the reply has been sent, as libvirt orders them; so a handler
// either starts a goroutine that uses the stream and returns, or calls
// Reply first and then uses the stream itself. If the handler returns an
// error before replying, the stream is discarded.
func (r *Request) Stream(opts *stream.Options) (*stream.Stream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replied {
		return nil, errors.New("virtrpc: Stream after the reply was sent")
	}
	if r.st != nil {
		return nil, errors.New("virtrpc: the call already has a stream")
	}
	st, err := r.conn.newStream(r.Header, opts, true)
	if err != nil {
		return nil, err
	}
	r.st = st
	return st, nil
}

func (c *Conn) newStream(h frame.Header, opts *stream.Options, held bool) (*stream.Stream, error) {
	var o stream.Options
	if opts != nil {
		o = *opts
	}
	cfg := stream.Config{
		Header:      frame.Header{Prog: h.Prog, Vers: h.Vers, Proc: h.Proc, Serial: h.Serial},
		Sparse:      o.Sparse,
		ChunkSize:   min(c.cfg.ChunkSize, frame.MaxCompatStreamPayload),
		CompatLimit: c.cfg.CompatStreamBuffer,
		Held:        held,
	}
	switch {
	case c.Mode() == ModeNative:
		peer := c.peer.Load()
		cfg.Role = stream.Native
		cfg.ChunkSize = min(c.cfg.ChunkSize, int(peer.MaxStreamPayload))
		cfg.SendCredit = int64(peer.InitialWindow)
		cfg.RecvWindow = int64(c.cfg.StreamWindow)
		cfg.MaxWindow = int64(c.cfg.MaxStreamWindow)
		cfg.BufferLimit = int64(c.cfg.StreamBuffer)
		cfg.Budget = c.budget
		cfg.Target = c.bdp.streamWindow
	case c.isServer:
		cfg.Role = stream.CompatServer
	default:
		cfg.Role = stream.CompatClient
	}
	st := stream.New(c, cfg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Err(); err != nil {
		return nil, err
	}
	if _, dup := c.streams[h.Serial]; dup {
		return nil, fmt.Errorf("virtrpc: a stream on serial %d is already open", h.Serial)
	}
	c.streams[h.Serial] = st
	c.stats.streamsOpened.Add(1)
	return st, nil
}

// Schedule implements stream.Link.
func (c *Conn) Schedule(s *stream.Stream) { c.sched.schedule(s) }

// SendCredit implements stream.Link.
func (c *Conn) SendCredit(serial uint32, n uint64, direct bool) {
	var b [frame.Overhead + frame.CreditPayloadSize]byte
	h := frame.Header{Prog: frame.ControlProgram, Vers: frame.ControlVersion, Proc: frame.ControlCredit, Type: frame.TypeMessage, Serial: serial}
	frame.PutHeader(b[:], h, frame.CreditPayloadSize)
	frame.PutCredit(b[frame.Overhead:], n)
	c.sched.sendControl(b[:], direct)
}

// SendFrame implements stream.Link.
func (c *Conn) SendFrame(msg []byte) { c.sched.sendControl(msg, false) }

// Release implements stream.Link.
func (c *Conn) Release(s *stream.Stream) {
	serial := s.Header().Serial
	c.mu.Lock()
	if c.streams[serial] == s {
		delete(c.streams, serial)
	}
	c.mu.Unlock()
	s.ReturnWindow()
}
