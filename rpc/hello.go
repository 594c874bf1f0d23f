package rpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/virtrpc/virtrpc/frame"
)

var helloProc = Procedure{frame.ControlProgram, frame.ControlVersion, frame.ControlHello}

// nativeFeatures are the features native mode needs from both sides.
var nativeFeatures = []string{frame.FeatureFlowControl, frame.FeatureLargeFrames, frame.FeatureBidi}

func (c *Conn) localHello() *frame.Hello {
	return &frame.Hello{
		Version:          1,
		Features:         nativeFeatures,
		MaxStreamPayload: uint32(c.cfg.MaxMessage - frame.HeaderSize),
		InitialWindow:    uint32(c.cfg.StreamWindow),
		MaxCalls:         uint32(c.cfg.MaxConcurrentCalls),
	}
}

// hello negotiates native mode from the dialing side. A peer that answers
// with an error (libvirtd: unknown program) leaves the connection in compat
// mode, or fails it under RequireNative.
func (c *Conn) hello(ctx context.Context) error {
	start := time.Now()
	// Native from the reply on: the read loop goes native before it reads
	// the peer's next message, which may be a native call of the server.
	r, err := c.call(ctx, helloProc, frame.EncodeHello(c.localHello()), nil, func(r reply) {
		if r.h.Status != frame.StatusOK {
			return
		}
		// Before goNative: once native, the read loop reads helloRTT
		// (bdp.pong); hello reads it after the reply's hand-off.
		c.helloRTT = time.Since(start)
		if peer, err := frame.DecodeHello(r.payload); err == nil && usable(peer) == nil && len(missingFeatures(peer)) == 0 {
			c.goNative(peer)
		}
	})
	if err != nil {
		var fe *frame.Error
		if !errors.As(err, &fe) {
			return fmt.Errorf("virtrpc: HELLO: %w", err)
		}
		if c.cfg.Negotiation == RequireNative {
			return fmt.Errorf("%w: the peer answered HELLO with %w", ErrNativeRefused, fe)
		}
		c.cfg.log.Debug("virtrpc: running in compat mode", "hello_error", fe)
		return nil
	}
	c.noteRTT(c.helloRTT) // set by the read loop as it took the reply
	peer, err := frame.DecodeHello(r.payload)
	if err == nil {
		err = usable(peer)
	}
	if err != nil {
		return err
	}
	if missing := missingFeatures(peer); len(missing) > 0 {
		if c.cfg.Negotiation == RequireNative {
			return fmt.Errorf("%w: the peer lacks features %v", ErrNativeRefused, missing)
		}
		return nil
	}
	return nil // gone native on the read loop
}

// Smallest limits a peer may announce: below them a stream could not start
// (a sender waits for at least 16 KiB of credit) or would crawl.
const (
	minPeerStreamPayload = 4 << 10
	minPeerWindow        = 64 << 10
)

// usable rejects a HELLO whose limits would stall streams.
func usable(h *frame.Hello) error {
	if h.MaxStreamPayload < minPeerStreamPayload || h.InitialWindow < minPeerWindow {
		return fmt.Errorf("virtrpc: bad HELLO payload: stream payload limit %d (minimum %d) or initial window %d (minimum %d) too small",
			h.MaxStreamPayload, minPeerStreamPayload, h.InitialWindow, minPeerWindow)
	}
	return nil
}

func missingFeatures(h *frame.Hello) []string {
	var missing []string
	for _, f := range nativeFeatures {
		if !h.Has(f) {
			missing = append(missing, f)
		}
	}
	return missing
}

func (c *Conn) goNative(peer *frame.Hello) {
	c.peer.Store(peer)
	if peer.MaxCalls > 0 {
		sem := make(chan struct{}, peer.MaxCalls)
		c.callSem.Store(&sem)
	}
	c.mode.Store(int32(ModeNative))
}

// serveControl answers calls of the control program: HELLO, on the
// accepting side, as the first call.
func (c *Conn) serveControl(h frame.Header, payload []byte, first bool) error {
	if h.Proc != frame.ControlHello || h.Vers != frame.ControlVersion || !c.isServer || c.cfg.Negotiation == CompatOnly {
		// What libvirtd says to a program it does not serve.
		c.replyError(h, rpcError(frame.CodeRPC, "Cannot find program %d version %d", h.Prog, h.Vers), false)
		return nil
	}
	if !first {
		c.replyError(h, rpcError(frame.CodeRPC, "HELLO must be the first call of a connection"), false)
		return nil
	}
	peer, err := frame.DecodeHello(payload)
	if err == nil {
		err = usable(peer)
	}
	if err != nil {
		c.replyError(h, rpcError(frame.CodeRPC, "%s", err.Error()), false)
		return nil
	}
	mine := c.localHello()
	var common []string
	for _, f := range mine.Features {
		if peer.Has(f) {
			common = append(common, f)
		}
	}
	mine.Features = common
	native := len(missingFeatures(mine)) == 0
	if !native && c.cfg.Negotiation == RequireNative {
		return fmt.Errorf("%w: the peer lacks features %v", ErrNativeRefused, missingFeatures(peer))
	}
	reply, err := c.enc.Reply(h, frame.EncodeHello(mine))
	if err != nil {
		return err
	}
	if !native {
		return c.sched.queueThen(reply, nil)
	}
	// Native as the reply is queued, under the queue's lock: a native call
	// of ours made once Mode says native goes out behind the reply, and the
	// reply (so the peer's Client returning) cannot come before the mode.
	// The peer's next frame, read after this returns, is native too, and
	// Negotiated is closed before the peer's Client can return.
	return c.sched.queueThen(reply, func() { c.goNative(peer); c.settle() })
}
