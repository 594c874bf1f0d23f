package rpc

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Listener accepts connections; net.Listener and the transport package's
// listeners satisfy it.
type Listener interface {
	Accept() (net.Conn, error)
	Close() error
	Addr() net.Addr
}

// Serve accepts connections on l and serves each on its own goroutine:
// first the TLS handshake if the connection has one (a *tls.Conn, or the
// transport package's libvirt TLS conn), bounded by Options.HandshakeTimeout
// so a silent client cannot hold a connection, and never inside Accept; then
// Server(nc, opts), and onConn (if not nil) with the new connection. onConn
// may run for several connections at once. Serve returns when ctx ends or l
// fails, after closing l and every connection it accepted and waiting for
// them. Accept errors that pass (out of file descriptors or buffers, a
// connection aborted before it was accepted) are retried with a backoff of
// up to a second, as net/http does, and logged; connections already served
// carry on meanwhile.
//
// Serve caps what its clients can take, as libvirtd does: connections
// (MaxConnections), connections not yet authenticated (MaxUnauthenticated,
// AuthTimeout), and the memory they hold together (ServerMemory). A
// connection over a cap is closed as soon as it is accepted.
func Serve(ctx context.Context, l Listener, opts *Options, onConn func(*Conn)) error {
	cfg := resolve(opts)
	var (
		mu      sync.Mutex
		conns   = map[*Conn]struct{}{}
		stopped bool
		wg      sync.WaitGroup
	)
	// Cancelled as Serve ends, so handshakes under way end too.
	sctx, stopAll := context.WithCancel(ctx)
	defer stopAll()
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	limits := newServerLimits(cfg)
	if testHookServeLimits != nil {
		testHookServeLimits(limits)
	}
	serve := func(nc net.Conn, adm *admission) {
		var c *Conn
		defer func() { adm.leave(c); wg.Done() }()
		hctx, cancel := context.WithTimeout(sctx, cfg.HandshakeTimeout)
		err := handshake(hctx, nc)
		cancel()
		if err != nil {
			cfg.log.Debug("virtrpc: handshake failed", "remote", nc.RemoteAddr(), "err", err)
			return
		}
		c = newConnIn(nc, opts, true, adm)
		defer adm.watchAuth(c)()
		mu.Lock()
		if stopped {
			mu.Unlock()
			_ = c.Close()
			c.wait()
			return
		}
		conns[c] = struct{}{}
		mu.Unlock()
		if onConn != nil {
			onConn(c)
		}
		<-c.Done()
		adm.authenticated() // its MaxUnauthenticated place is free as it closes, not once its goroutines end
		c.wait()
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
	}
	var err error
	var backoff time.Duration
	for {
		nc, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() == nil && transientAccept(aerr) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				cfg.log.Warn("virtrpc: accept failed; retrying", "err", aerr, "in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
					continue
				case <-ctx.Done():
					t.Stop()
					aerr = ctx.Err()
				}
			}
			err = aerr
			break
		}
		backoff = 0
		adm, why := limits.admit()
		if why != nil { // closed at once: waiting would let the listen queue fill behind an attacker
			cfg.log.Debug("virtrpc: connection refused", "remote", nc.RemoteAddr(), "why", why)
			_ = nc.Close()
			continue
		}
		wg.Add(1)
		go serve(nc, adm)
	}
	_ = l.Close()
	stopAll()
	mu.Lock()
	stopped = true
	all := make([]*Conn, 0, len(conns))
	for c := range conns {
		all = append(all, c)
	}
	mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
	wg.Wait()
	if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
		return ctx.Err()
	}
	return err
}

// transientAccept reports whether an Accept error passes with time.
func transientAccept(err error) bool {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
