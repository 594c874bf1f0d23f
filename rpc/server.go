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

// Serve accepts connections on l and serves each with Server(nc, opts),
// calling onConn (if not nil) with every new connection. It returns when ctx
// ends or l fails, after closing l and every connection it accepted and
// waiting for them. Accept errors that pass (out of file descriptors or
// buffers, a connection aborted before it was accepted) are retried with a
// backoff of up to a second, as net/http does, and logged.
func Serve(ctx context.Context, l Listener, opts *Options, onConn func(*Conn)) error {
	var (
		mu    sync.Mutex
		conns = map[*Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() { _ = l.Close() })
	defer stop()
	var err error
	var backoff time.Duration
	for {
		nc, aerr := l.Accept()
		if aerr != nil {
			if ctx.Err() == nil && transientAccept(aerr) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				resolve(opts).log.Warn("virtrpc: accept failed; retrying", "err", aerr, "in", backoff)
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
		c := Server(nc, opts)
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-c.Done()
			c.wait()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
		if onConn != nil {
			onConn(c)
		}
	}
	_ = l.Close()
	mu.Lock()
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
