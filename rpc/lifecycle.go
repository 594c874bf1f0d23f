package rpc

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/virtrpc/virtrpc/internal/streamcore"
)

// ErrShutdown: Shutdown was called; the connection starts and serves no new
// calls while it drains.
var ErrShutdown = errors.New("virtrpc: connection shutting down")

// Close closes the connection at once: what is queued and not yet written
// is dropped, every waiter is unblocked with a *ClosedError, and handlers'
// contexts are cancelled. It is safe from any goroutine, call handlers,
// message handlers and stream goroutines included: it waits for the
// connection's own goroutines (reading, writing, keepalive), which end
// promptly, but not for handlers, which end when they return. To let
// calls and streams finish first, use Shutdown.
func (c *Conn) Close() error {
	c.closeWith(errLocalClose)
	c.loops.Wait()
	return nil
}

// Shutdown closes the connection gracefully: from now on the peer's new
// calls get an error reply and new local calls fail with ErrShutdown, and
// Shutdown waits until the calls made in both directions are answered,
// their handlers have returned, every stream has ended and everything queued
// is written; then it closes the connection and waits for its goroutines.
// Messages are not waited for: a message handler still running sees its ctx
// cancelled. If ctx ends first, Shutdown closes the connection as Close
// does and returns ctx's error. A call handler must not wait for the
// Shutdown of its own connection (it would wait for itself until ctx
// ends); it calls Close, or starts Shutdown on another goroutine.
func (c *Conn) Shutdown(ctx context.Context) error {
	c.draining.Store(true)
	wait := time.Millisecond
	t := time.NewTimer(wait)
	defer t.Stop()
	for !c.drained() { // polled, as net/http's Shutdown does: no hook on every path
		select {
		case <-ctx.Done():
			_ = c.Close()
			return ctx.Err()
		case <-c.done:
			c.loops.Wait()
			return nil
		case <-t.C:
			wait = min(2*wait, 50*time.Millisecond)
			t.Reset(wait)
		}
	}
	// Closing a tls.Conn writes close_notify, which blocks on a peer that
	// reads nothing (for up to 5 s): ctx bounds it by closing the socket.
	stop := context.AfterFunc(ctx, func() { closeSocket(c.nc) })
	c.shut(errLocalClose, true)
	stop()
	c.loops.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// drained reports whether nothing is left to wait for before closing.
func (c *Conn) drained() bool {
	c.mu.Lock()
	n := len(c.pending) + len(c.streams)
	c.mu.Unlock()
	return n == 0 && c.running.Load() == 0 && c.sched.idle()
}

// wait blocks until all goroutines of the connection, handlers included,
// have ended (Serve waits so, after closing).
func (c *Conn) wait() {
	c.loops.Wait()
	c.user.Wait()
}

// closeWith closes the connection at once, recording cause.
func (c *Conn) closeWith(cause error) { c.shut(cause, false) }

// shut shuts the connection down once, recording cause; it does not wait
// for goroutines (it may run on one of them). graceful closes nc with its
// own Close (a tls.Conn then sends close_notify); otherwise the socket
// under any wrapper is closed first, so nothing blocks on the peer.
func (c *Conn) shut(cause error, graceful bool) {
	c.closeOnce.Do(func() {
		c.err = &ClosedError{Cause: cause}
		if cause != errLocalClose {
			c.cfg.log.Debug("virtrpc: connection closing", "cause", cause)
		}
		c.sched.shutdown()
		// The streams fail before done is closed: a stream Write that
		// follows Done must return the connection's error, not queue data
		// that will never be sent. shutting keeps a stream from
		// registering after the streams were taken (openStream).
		c.mu.Lock()
		c.shutting = true
		pend := c.pending
		c.pending = map[uint32]*pendingCall{}
		sts := c.streams
		c.streams = map[uint32]*streamcore.Stream{}
		for s, n := range c.streamMem {
			c.mem.give(n)
			delete(c.streamMem, s)
		}
		c.mu.Unlock()
		for _, s := range sts {
			s.Fail(c.err)
		}
		close(c.done)
		c.cancel()
		if !graceful {
			closeSocket(c.nc)
		}
		_ = c.nc.Close()
		for _, p := range pend {
			p.finish(reply{}, c.err)
		}
		c.msgs.close()
	})
}

// closeSocket closes the innermost connection under nc's wrappers
// (*tls.Conn and the transport package's conns have NetConn): a tls.Conn's
// own Close first writes close_notify, which can block on a peer that reads
// nothing.
func closeSocket(nc net.Conn) { _ = innermost(nc).Close() }

// innermost is the connection under nc's wrappers (those with NetConn).
func innermost(nc net.Conn) net.Conn {
	for range maxWrappers {
		inner := unwrap(nc)
		if inner == nil {
			break
		}
		nc = inner
	}
	return nc
}

// maxWrappers bounds a walk down NetConn in case a wrapper returns itself.
const maxWrappers = 16

// unwrap returns the connection nc wraps (its NetConn), or nil.
func unwrap(nc net.Conn) net.Conn {
	w, ok := nc.(interface{ NetConn() net.Conn })
	if !ok {
		return nil
	}
	return w.NetConn()
}
